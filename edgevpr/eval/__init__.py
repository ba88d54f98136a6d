"""Evaluation: Recall@N with exact search, one code path for checkpoints and exports."""
