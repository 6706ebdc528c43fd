"""The verdict of a measurement: which artifact to deploy on this device, which baseline beats every
candidate (and what to do about it), and which artifact breaks a Dice limit — one implementation for
``bench`` (its JSON, Markdown and terminal) and ``compress`` (its summary), one wording.

Rules (benchmarks/SCHEMA.md, ``verdict``): an artifact is *within the limits* when no label's mean Dice
drop against the FP32 reference exceeds its limit (``--max-dice-drop``, default 0.5 points; ``--per-label``)
and no structure of the reference's masks vanishes in any case. The recommendation is the fastest bundle
artifact within the limits that ``edgeseg infer`` can run (not the PyTorch model), by end-to-end p50 when it
was measured, else by model-only p50 (and the verdict says so). A baseline *beats every candidate* when it
is within the limits and faster than the recommendation by more than the run's noise.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from edgeseg.benchmark.ratios import run_noise, signed, speedup, speedup_words
from edgeseg.errors import EdgesegError

DEFAULT_MAX_DROP = 0.5  # Dice points
BUSY = 0.25  # a run noisier than this says that its speed comparisons are weak


@dataclass
class Point:
    """One artifact as the verdict sees it; timings are dicts with ``p50_ms`` and ``round_p50_ms``."""

    name: str
    origin: str                       # bundle | baseline
    runtime: str
    drift: dict | None = None         # {label: {mean, low, high, n}}, fractions; None: unlabelled / not scored
    worst: dict | None = None         # {label: {case, delta}}
    vanished: list = field(default_factory=list)  # structure changes of kind "vanished"
    scored: bool = False              # masks compared with the reference (agreement, vanished)
    model: dict | None = None
    e2e: dict | None = None


def check_limit_labels(limits: dict, label_names: list[str]) -> None:
    """Refuse a ``--per-label`` limit on a label the model does not have (one line naming it)."""
    labels = label_names[1:] + (["foreground"] if len(label_names) > 2 else [])
    if unknown := sorted(set(limits.get("per_label_points") or {}) - set(labels)):
        raise EdgesegError(f"--per-label names {', '.join(unknown)}; the model's labels are {', '.join(labels)}")


def _limit(limits: dict, label: str) -> float:
    return (limits.get("per_label_points") or {}).get(label, limits.get("max_dice_drop_points", DEFAULT_MAX_DROP))


def breaks(point: Point, limits: dict) -> list[dict]:
    """Every limit ``point`` breaks: ``{"kind": "mean_drop", label, points, limit, low, high, worst}`` or
    ``{"kind": "vanished", count, case, label}``."""
    out = []
    for label, d in (point.drift or {}).items():
        if d.get("mean") is not None and -d["mean"] * 100 > _limit(limits, label):
            worst = (point.worst or {}).get(label)
            out.append({"kind": "mean_drop", "label": label, "points": d["mean"] * 100, "limit": _limit(limits, label),
                        "low": None if d.get("low") is None else d["low"] * 100,
                        "high": None if d.get("high") is None else d["high"] * 100,
                        "worst": worst and {"case": worst["case"], "points": worst["delta"] * 100}})
    if point.vanished:
        first = point.vanished[0]
        out.append({"kind": "vanished", "count": len(point.vanished), "case": first["case"], "label": first["label"]})
    return out


def describe_break(b: dict) -> str:
    """``lesion −1.96 pts [−2.40, −1.50] (limit −0.5; worst case case_007 −15.9)`` / ``2 structure(s) vanished …``."""
    if b["kind"] == "vanished":
        return (f"{b['count']} structure(s) of the reference masks vanished, e.g. {b['label']} in {b['case']} "
                "(limit: none may vanish)")
    ci = f" [{signed(b['low'], 2)}, {signed(b['high'], 2)}]" if b.get("low") is not None else ""
    worst = f"; worst case {b['worst']['case']} {signed(b['worst']['points'], 1)}" if b.get("worst") else ""
    return f"{b['label']} mean {signed(b['points'], 2)} pts{ci} (limit −{b['limit']:g}{worst})"


def _advice(point: Point, checkpoint: str, isa: list[str]) -> str:
    """What to do when ``point`` (a baseline) beats every candidate: the edgeseg command closest to it."""
    bf16 = any(f in isa for f in ("avx512_bf16", "amx_bf16"))
    ckpt = checkpoint or "CHECKPOINT"
    name = point.name.removeprefix("baseline:")
    if name == "nncf-defaults":
        profile = "x86-avx512-openvino-int8-bf16" if bf16 else "x86-avx512-openvino-int8"
        return ("NNCF's defaults keep no layer float and run the float parts at OpenVINO's default precision"
                f"{' (BF16 on this CPU)' if bf16 else ''}: try `edgeseg compress {ckpt} --int8 --target-profile "
                f"{profile} --no-preset`, then bench again")
    if name == "ort-quantize-static-defaults":
        return (f"ONNX Runtime's defaults keep no layer float: try `edgeseg compress {ckpt} --int8 --targets onnx "
                "--no-preset`, then bench again")
    if name in ("openvino-default", "openvino-f32"):
        profile = "x86-openvino-default" if name == "openvino-default" else "x86-openvino-fp32"
        return (f"INT8 does not pay here: deploy the FP32 model on OpenVINO: `edgeseg compress {ckpt} --precision fp32 "
                f"--target-profile {profile}`")
    if name.startswith("torch-cuda"):
        return "this device has a GPU: build for it (`--target-profile rtx-tensorrt-int8`, then `edgeseg build-engine`)"
    if name == "torch-compile":
        return ("compression does not pay on this device: deploy the FP32 model with torch.compile (the device then "
                "needs torch; `edgeseg infer` does not run it)")
    if point.runtime == "torch":
        return f"compression does not pay on this device: {name} in PyTorch eager is faster"
    return "compare its settings with the bundle's"


def decide(points: list[Point], reference: str, limits: dict, noise: dict | None = None,
           checkpoint: str = "", isa: list[str] = ()) -> dict:
    """The verdict as data (``benchmarks/SCHEMA.md``, ``verdict``); ``lines`` is its wording. ``noise``:
    :func:`~edgeseg.benchmark.ratios.run_noise` of the run (default: the floor)."""
    noise_info = noise or run_noise(None)
    noise = noise_info["relative"]
    limits = {"max_dice_drop_points": limits.get("max_dice_drop_points", DEFAULT_MAX_DROP),
              "per_label_points": dict(limits.get("per_label_points") or {})}
    ref = next((p for p in points if p.name == reference), None)
    broken = {p.name: b for p in points if p.name != reference and (b := breaks(p, limits))}
    deployable = [p for p in points if p.origin == "bundle" and p.runtime != "torch" and p.name not in broken
                  and p.scored and (p.model or p.e2e)]
    basis = "end_to_end" if any(p.e2e for p in points) else "model"
    timing = (lambda p: p.e2e) if basis == "end_to_end" else (lambda p: p.model)  # noqa: E731
    timed = sorted((p for p in deployable if timing(p)), key=lambda p: timing(p)["p50_ms"])
    best = timed[0] if timed else None
    labelled = any(p.drift for p in points)
    beaten = []
    for p in points:
        if p.origin != "baseline" or p.name in broken or not p.scored or not (p.drift or not labelled) or not timing(p):
            continue
        gain = speedup(timing(best), timing(p), noise) if best else None
        if best is None or gain["value"] > 1 + noise:
            beaten.append({"name": p.name, "p50_ms": timing(p)["p50_ms"], "speedup": gain,
                           "advice": _advice(p, checkpoint, list(isa))})
    verdict = {"limits": limits, "basis": basis, "labelled": labelled, "noise": noise_info,
               "recommended": best and {"name": best.name, "p50_ms": timing(best)["p50_ms"],
                                        "speedup_vs_reference": speedup(timing(ref), timing(best), noise) if ref else None,
                                        "as_fast": [p.name for p in timed[1:] if timing(p)["p50_ms"] <= timing(best)["p50_ms"] * (1 + noise)]},
               "beaten_by": beaten,
               "breaks": [{"name": n, "limit": b, "text": describe_break(b)} for n, bs in broken.items() for b in bs],
               "untimed": [p.name for p in points if p.origin == "bundle" and p.name not in broken and p.scored
                           and p.runtime != "torch" and not timing(p)]}
    verdict["lines"] = verdict_lines(verdict, reference)
    return verdict


def _limits_text(limits: dict) -> str:
    per = "".join(f", {k} {v:g}" for k, v in limits["per_label_points"].items())
    return f"mean Dice drop ≤ {limits['max_dice_drop_points']:g} pts per label{per}, no structure vanishing"


def verdict_lines(v: dict, reference: str) -> list[str]:
    """The verdict in words, the same in every report: recommendation, beating baselines, broken limits."""
    what = "end-to-end p50 per case" if v["basis"] == "end_to_end" else "model-only p50 (batch 1)"
    lines = [f"limits: {_limits_text(v['limits'])}; speed: {what}"]
    if v["basis"] == "model":
        lines.append("end-to-end latency was not measured: ranked by model-only latency")
    if (v.get("noise") or {}).get("relative", 0) > BUSY:
        lines.append(f"the machine was busy: the fixed workload's round medians moved {v['noise']['relative']:.0%} in "
                     "this run, so speed differences smaller than that are not evidence; re-run on an idle machine")
    if not v["labelled"]:
        lines.append("no labels: the Dice limits were not checked (agreement and vanished structures only)")
    if rec := v["recommended"]:
        gain = rec.get("speedup_vs_reference")
        vs = f", {speedup_words(gain, reference)}" if gain else ""
        near = f"; as fast within the noise: {', '.join(rec['as_fast'])}" if rec["as_fast"] else ""
        lines.append(f"recommended: {rec['name']} ({rec['p50_ms']:.1f} ms{vs}){near}")
    else:
        lines.append("recommended: none — no artifact of the bundle that `edgeseg infer` runs is within the limits "
                     "and timed on this device")
    for b in v["beaten_by"]:
        faster = f", {speedup_words(b['speedup'], 'the recommendation')}" if b.get("speedup") else ""
        lines.append(f"beats every candidate: {b['name']} ({b['p50_ms']:.1f} ms{faster}, within the limits) — "
                     f"{b['advice']}")
    for name in v["untimed"]:
        lines.append(f"within the limits, not timed in this run: {name}")
    lines += [f"breaks a limit: {b['name']}: {b['text']}" for b in v["breaks"]]
    return lines


def bench_points(result: dict) -> list[Point]:
    """The artifacts of an ``edgeseg bench`` result as :class:`Point`."""
    out = []
    for a in result["artifacts"]:
        acc = a.get("accuracy") or {}
        out.append(Point(a["name"], a["origin"], a["runtime"], acc.get("drift"), acc.get("worst_case"),
                         [c for c in acc.get("structure_changes") or [] if c["change"] == "vanished"],
                         bool(a.get("accuracy")), (a.get("latency") or {}).get("batch_1"), a.get("end_to_end")))
    return out


def bench_verdict(result: dict, limits: dict | None = None, noise: dict | None = None) -> dict:
    """:func:`decide` for a bench result (its recorded limits and noise unless given)."""
    recorded = result.get("verdict") or {}
    return decide(bench_points(result), result["reference"], limits or recorded.get("limits") or {},
                  noise or recorded.get("noise"),
                  (result["bundle"].get("source_checkpoint") or {}).get("name", ""), result["device"]["cpu"]["isa"])


def compress_points(manifest: dict) -> list[Point]:
    """The artifacts of a bundle manifest (``compress``'s measurements) as :class:`Point` (model latency only);
    the ``--baseline-checkpoint`` model, timed but not scored, as a baseline."""
    out = []
    for a in manifest["artifacts"]:
        acc = a.get("accuracy") or {}
        out.append(Point(a["name"], "bundle", a["runtime"], acc.get("drift_ci95"), acc.get("worst_case"),
                         [c for c in acc.get("structure_changes") or [] if c["change"] == "vanished"],
                         bool(a.get("accuracy")), a.get("latency")))
    if base := manifest["artifacts"][0].get("baseline"):
        out.append(Point(f"baseline:{base['checkpoint']}", "baseline", "torch", model=base.get("latency")))
    return out
