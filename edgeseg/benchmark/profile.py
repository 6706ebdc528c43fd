"""``bench --profile``: where each artifact's time goes, layer by layer, from its runtime's own profiler
(OpenVINO's performance counters, ONNX Runtime's trace) on the latency sample, in the bench process. Per artifact:
the total of the layer times, the share by op type and by executed kernel/precision, and the slowest layers —
the evidence for what to make faster (float-kept layers, reorders between INT8 and float, narrow convolutions)."""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from edgeseg.artifact import Artifact
from edgeseg.errors import EdgesegError

TOP = 15


def _shares(rows: list[dict], key: str, total: float) -> list[dict]:
    groups: dict[str, float] = collections.defaultdict(float)
    for row in rows:
        groups[row[key]] += row["ms"]
    return [{key: k, "ms": round(v, 4), "share": round(v / total, 4) if total else 0.0}
            for k, v in sorted(groups.items(), key=lambda kv: -kv[1])]


def profile_artifacts(bundle: Path, artifacts: list[Artifact], sample: np.ndarray, threads: int | None,
                      runs: int = 20) -> dict:
    """``{artifact name: summary}`` for every non-PyTorch artifact (a runtime without a profiler: its reason)."""
    from edgeseg.targets import get_target

    out = {}
    for artifact in artifacts:
        if artifact.runtime == "torch":
            continue
        try:
            rows = get_target(artifact.runtime).layer_profile(bundle, artifact, sample, threads, runs)
        except EdgesegError as exc:
            out[artifact.name] = {"error": str(exc)}
            continue
        total = sum(r["ms"] for r in rows)
        rows.sort(key=lambda r: -r["ms"])
        out[artifact.name] = {
            "runs": runs, "layers": len(rows), "total_ms": round(total, 4),
            "by_op": _shares(rows, "op", total), "by_exec": _shares(rows, "exec", total),
            "top": [{**r, "ms": round(r["ms"], 4), "share": round(r["ms"] / total, 4) if total else 0.0}
                    for r in rows[:TOP]]}
    return out


def profile_section(result: dict) -> list[str]:
    """Markdown: per artifact, the share by op type and kernel, and the slowest layers."""
    profile = result.get("profile")
    if not profile:
        return []
    lines = ["## Where the time goes (per layer, `--profile`)", "",
             "Median per-layer time over the runs of the runtime's own profiler on the latency sample (batch 1); the "
             "sum of layer times can differ from the measured latency (threads overlap, profiler overhead).", ""]
    for name, p in profile.items():
        if "error" in p:
            lines += [f"### `{name}`", "", p["error"], ""]
            continue
        ops = ", ".join(f"{o['op']} {o['share']:.0%}" for o in p["by_op"][:6])
        kernels = ", ".join(f"`{e['exec']}` {e['share']:.0%}" for e in p["by_exec"][:5])
        lines += [f"### `{name}`: {p['total_ms']:.2f} ms over {p['layers']} layers", "", f"- by op: {ops}",
                  f"- by kernel: {kernels}", "", "| layer | op | kernel | ms | share |", "|---|---|---|---|---|",
                  *(f"| `{r['layer'][:60]}` | {r['op']} | `{r['exec']}` | {r['ms']:.3f} | {r['share']:.1%} |"
                    for r in p["top"]), ""]
    return lines
