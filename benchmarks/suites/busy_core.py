"""Keep one core busy for a fraction of every 10 ms, until killed: a stand-in for other work on a shared runner
(the same load as `edgeseg bench --load`, edgeseg/benchmark/load.py).

    python benchmarks/suites/busy_core.py 0.3 &  bash benchmarks/suites/ci_gate.sh runs/ci_gate_load;  kill %1
"""
from __future__ import annotations

import sys

from edgeseg.benchmark.load import busy

if __name__ == "__main__":
    busy(float(sys.argv[1]))
