"""Measuring artifacts: isolated-process latency, drift statistics, the device fingerprint."""
