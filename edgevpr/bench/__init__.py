"""``edgevpr bench``: latency per backend, precision and batch size, per pipeline stage, with
the machine named. Exported artifacts run through the runtime (what is measured is what ships);
PyTorch eager is the reference row."""
