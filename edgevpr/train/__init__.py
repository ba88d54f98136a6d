"""Training: place-balanced batches, the MixVPR recipe, MS / triplet / distance-weighted
losses, validation Recall@N, checkpoints, resume and DDP via torchrun."""
