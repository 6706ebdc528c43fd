"""Measuring bundles: the ``edgeseg bench`` harness, isolated-process latency, drift statistics, baselines users
would pick instead, the device fingerprint, the versioned result schema and its reports."""
