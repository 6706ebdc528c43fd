"""Measuring artifacts: latency now; the full harness (``edgeseg bench``) builds on it."""
from .latency import measure_latency

__all__ = ["measure_latency"]
