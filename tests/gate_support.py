"""Shared by the gate tests: the CLI call, result editing, and the slowdown inserted into an ONNX model."""
import copy
import re
import sys
from pathlib import Path

from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.gating.baseline import MIN_ROUNDS

INT8 = "x86-onnxruntime-int8"


def _gate(*args, confirm=False):
    """``edgeseg gate ARGS``; without ``confirm`` a broken latency limit is not re-benched (``--no-confirm``)."""
    return CliRunner().invoke(app, ["gate", *[str(a) for a in args], *([] if confirm else ["--no-confirm"])])


def _flat(output: str) -> str:
    """The gate's table as one line: cell text wrapped over several lines reads on."""
    return re.sub(r"[│┃\s]+", " ", output)


def _artifact(res, name):
    return next(a for a in res["artifacts"] if a["name"] == name)


def _slow_down(res, name, factor, spread=None):
    _scale(_artifact(res, name)["latency"]["batch_1"], factor, spread)
    return res


def _scale(lat, factor, spread=None):
    for key in ("p50_ms", "p90_ms"):
        lat[key] *= factor
    p50 = lat["p50_ms"]
    lat["round_p50_ms"] = [p50] * MIN_ROUNDS if spread is None else [p50 * (1 - spread), p50, p50 * (1 + spread)] * 2


def _insert_slow_ops(model_path, layers=6, channels=32):
    """``benchmarks/suites/gate_flap.py``'s side branch of convolutions × 0 added to the logits (same masks,
    more work per inference)."""
    suites = str(Path(__file__).resolve().parents[1] / "benchmarks" / "suites")
    sys.path.insert(0, suites)
    try:
        from gate_flap import insert_slow_ops
    finally:
        sys.path.remove(suites)
    insert_slow_ops(model_path, layers, channels)


def _workload_of(res, runtime):
    return res["workload"]["by_runtime"][runtime]["latency"]["batch_1"]


def _runs_with_spread(steady, factors):
    """Copies of ``steady`` whose ONNX Runtime artifacts run ``factors`` × as long: a run-to-run spread."""
    out = []
    for f in factors:
        res = copy.deepcopy(steady)
        for a in res["artifacts"]:
            if a["runtime"] == "onnxruntime" and a["latency"]:
                _slow_down(res, a["name"], f)
        out.append(res)
    return out


def _other(steady, **changes):
    res = copy.deepcopy(steady)
    if "checkpoint" in changes:
        res["bundle"]["source_checkpoint"] = {"name": changes["checkpoint"], "sha256": "f" * 64}
    if "fingerprint" in changes:
        res["data"].update(dataset="Dataset003_ThyroidUS", fingerprint=changes["fingerprint"])
    return res
