"""The torch-free floor every stage stands on: errors, files, provenance, extras, defaults,
argument checks, geography, image decoding and orientation, pixels, preprocessing, the
evaluation layout's names, model metadata, the engine header and the artifact-format table.

Nothing here imports from any other part of edgevpr (a test enforces it), nor torch.
"""
