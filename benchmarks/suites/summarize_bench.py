"""Print the README tables of `bench_c.sh` results: one compact table per result JSON, plus the candidates'
ratios against the baselines. Usage: python benchmarks/suites/summarize_bench.py runs/bench_c/*.json"""
from __future__ import annotations

import sys

from edgeseg.benchmark.report import baseline_rows, compact_table, data_line
from edgeseg.benchmark.schema import read_result


def main(paths: list[str]) -> None:
    for path in paths:
        result = read_result(path)
        print(f"#### {result['bundle']['source_checkpoint']['name']} · {data_line(result)} · "
              f"{result['settings']['headline_label']} · {result['seconds']:.0f} s\n")
        print("\n".join(compact_table(result)))
        print()
        if rows := baseline_rows(result):
            print("| candidate | vs | model speed-up | e2e speed-up | Dice diff pts |\n|---|---|---:|---:|---:|")
            print("\n".join("| " + " | ".join(r) + " |" for r in rows))
            print()


if __name__ == "__main__":
    main(sys.argv[1:])
