"""``edgeseg gate``: fail a build when a deployed model got slower or less accurate than its baseline."""
from edgeseg.gating.baseline import (
                       MIN_ROUNDS,
                       describe_baseline,
                       device_class,
                       make_baseline,
                       read_baseline,
                       summarize_runs,
                       write_baseline,
)
from edgeseg.gating.check import GateLimits, gate_runs, run_gate

__all__ = ["GateLimits", "MIN_ROUNDS", "describe_baseline", "device_class", "gate_runs", "make_baseline", "read_baseline",
           "run_gate", "summarize_runs", "write_baseline"]
