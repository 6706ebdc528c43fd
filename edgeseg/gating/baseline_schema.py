"""What a gate baseline must hold before the gate reads it: every field :mod:`edgeseg.gating.check` uses, of the
right type and range. A damaged or hand-edited baseline (a file, or a dict given to ``edgeseg.gate``) is one line
of unusable input, never a traceback or a check failing on NaN."""
from __future__ import annotations

from edgeseg.benchmark.schema import MAX_ITEMS
from edgeseg.errors import InputError
from edgeseg.validation import (
    FieldError,
    expect_choice,
    expect_dict,
    expect_int,
    expect_list,
    expect_number,
    expect_str,
    expect_str_list,
    fail,
    short,
)

BASELINE_SCHEMA, BASELINE_VERSION = "edgeseg-gate-baseline", 1
# runtime_fp32: ÷ the bundle's FP32 artifact on the same runtime, timed in the same rounds (non-FP32 artifacts only)
MODES = ("workload", "reference", "absolute", "runtime_fp32")
METRICS = ("p50", "p90")


def check_baseline(baseline, source) -> dict:
    """``baseline`` if it is a gate baseline of the version this edgeseg reads, with every field the gate uses
    well-formed; else one line naming ``source`` and the first bad field."""
    if not isinstance(baseline, dict) or baseline.get("schema") != BASELINE_SCHEMA:
        raise InputError(f"{source}: not an {BASELINE_SCHEMA} file (write one with `edgeseg gate --update-baseline`)")
    version = baseline.get("schema_version")
    if type(version) is not int or version != BASELINE_VERSION:
        raise InputError(f"{source}: {BASELINE_SCHEMA} schema_version {short(version, 40)}; this edgeseg reads "
                         f"version {BASELINE_VERSION}: re-create the baseline with this edgeseg")
    if missing := {"device_class", "data", "artifacts"} - set(baseline):
        raise InputError(f"{source}: baseline lacks {sorted(missing)}")
    try:
        _check_fields(baseline)
    except FieldError as exc:
        raise InputError(f"{source}: damaged baseline: {exc}; re-create it with edgeseg gate --update-baseline") \
            from None
    return baseline


def _check_fields(baseline: dict) -> None:
    expect_str(baseline["device_class"], "device_class", 256)
    if baseline.get("workload") is not None:
        expect_str(baseline["workload"], "workload", 256)
    data = expect_dict(baseline["data"], "data")
    for key in ("dataset", "fingerprint"):
        expect_str(data.get(key), f"data.{key}", 256)
    expect_str_list(data.get("cases"), "data.cases", max_len=MAX_ITEMS)
    model = baseline.get("model")
    if model is not None and expect_dict(model, "model").get("source_checkpoint") is not None:
        expect_dict(model["source_checkpoint"], "model.source_checkpoint")
    if "runs" in baseline:
        expect_int(baseline["runs"], "runs", 1, MAX_ITEMS)
    if baseline.get("run_sigma") is not None:
        _check_run_sigma(baseline["run_sigma"])
    artifacts = expect_dict(baseline["artifacts"], "artifacts")
    if not artifacts:
        fail("artifacts", "empty: nothing to gate")
    if len(artifacts) > MAX_ITEMS:
        fail("artifacts", f"{len(artifacts)} of them, more than {MAX_ITEMS}")
    for name, artifact in artifacts.items():
        _check_artifact(expect_dict(artifact, f"artifacts.{name}"), f"artifacts.{name}")


def _check_run_sigma(run_sigma) -> None:
    """``{metric: {mode: {runtime: {"sigma", "dof"}}}}``."""
    for metric, modes in expect_dict(run_sigma, "run_sigma").items():
        expect_choice(metric, "run_sigma (metric)", METRICS)
        for mode, runtimes in expect_dict(modes, f"run_sigma.{metric}").items():
            expect_choice(mode, f"run_sigma.{metric} (mode)", MODES)
            for runtime, rec in expect_dict(runtimes, f"run_sigma.{metric}.{mode}").items():
                where = f"run_sigma.{metric}.{mode}.{runtime}"
                expect_dict(rec, where)
                expect_number(rec.get("sigma"), f"{where}.sigma", 0)
                expect_int(rec.get("dof"), f"{where}.dof", 0, 10**9)


def _check_artifact(artifact: dict, where: str) -> None:
    for key in ("status", "runtime"):
        expect_str(artifact.get(key), f"{where}.{key}", 64)
    for key in ("dice", "agreement"):
        if artifact.get(key) is not None:
            for label, value in expect_dict(artifact[key], f"{where}.{key}").items():
                expect_number(value, f"{where}.{key}.{label}", 0, 1)
    expect_str_list(artifact.get("vanished", []), f"{where}.vanished", max_len=MAX_ITEMS)
    for metric, modes in expect_dict(artifact.get("latency", {}), f"{where}.latency").items():
        expect_choice(metric, f"{where}.latency (metric)", METRICS)
        if expect_dict(modes, f"{where}.latency.{metric}") and "absolute" not in modes:
            fail(f"{where}.latency.{metric}", "no absolute latency (ms)")
        for mode, entry in modes.items():
            expect_choice(mode, f"{where}.latency.{metric} (mode)", MODES)
            _check_timing(expect_dict(entry, f"{where}.latency.{metric}.{mode}"), f"{where}.latency.{metric}.{mode}")


def _check_timing(entry: dict, where: str) -> None:
    """A latency of one mode: its value, the rounds and run values it was pooled from (all > 0), σ and runs."""
    _timing(entry.get("value"), f"{where}.value")
    for key, default in (("rounds", None), ("run_values", [])):  # rounds: what the gate's noise band is made of
        for i, value in enumerate(expect_list(entry.get(key, default), f"{where}.{key}", max_len=MAX_ITEMS)):
            _timing(value, f"{where}.{key}[{i}]")
    expect_number(entry.get("sigma", 0.0), f"{where}.sigma", 0)
    expect_int(entry.get("runs", 1), f"{where}.runs", 1, MAX_ITEMS)
    if "runtime" in entry:
        expect_str(entry["runtime"], f"{where}.runtime", 64)


def _timing(value, where: str) -> None:
    if expect_number(value, where, 0) <= 0:
        fail(where, f"{value} is not a timing (> 0)")
