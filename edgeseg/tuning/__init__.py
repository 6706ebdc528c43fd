"""Accuracy-aware INT8: tuning cases, variant scoring and per-node Dice sensitivity."""
