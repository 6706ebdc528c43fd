"""Compression of a checkpoint into a verified bundle: data (data.py) → stages (stages.py) → pipeline.py."""
