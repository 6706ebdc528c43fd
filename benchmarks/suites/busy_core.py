"""Keep one core busy for a fraction of every 10 ms, until killed: a stand-in for other work on a shared runner.

    python benchmarks/suites/busy_core.py 0.3 &  bash benchmarks/suites/ci_gate.sh runs/ci_gate_load;  kill %1
"""
from __future__ import annotations

import sys
import time


def busy(duty: float, period: float = 0.01) -> None:
    """Spin ``duty`` of each ``period`` seconds, sleep the rest; forever."""
    while True:
        start = time.perf_counter()
        while time.perf_counter() - start < duty * period:
            pass
        time.sleep((1 - duty) * period)


if __name__ == "__main__":
    busy(float(sys.argv[1]))
