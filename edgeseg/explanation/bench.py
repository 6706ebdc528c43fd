"""``edgeseg bench --explain``: the explanation drift of the artifacts bench measured, added to its result as the
``explain`` section (an ``edgeseg explain`` result, schema ``edgeseg-explain`` v1, that ``edgeseg gate`` reads).
It runs after every timing, so it never competes with a latency measurement."""
from __future__ import annotations

from edgeseg.explanation.run import ExplainConfig, run_explain


def add_explanation(result: dict, cfg, cases: int, threads: int | None = None) -> dict:
    """Explain the bundle's own compressed artifacts that ``result`` (of bench config ``cfg``) measured, on the first ``cases``
    of its cases, against its FP32 reference — or against ``cfg.baseline_checkpoint`` (the model before pruning)
    when given; sets ``result["explain"]`` and a verdict line; returns ``result``."""
    from edgeseg.bundle import manifest_artifacts, read_manifest

    own = {a.name for a in manifest_artifacts(read_manifest(cfg.bundle))}
    # against the bundle's own FP32 model, its FP32 artifacts are the same weights (the FP32 ONNX one makes the
    # reference's forward maps); against a --baseline-checkpoint they are the pruned model and are explained
    same_weights = cfg.baseline_checkpoint is None
    names = [a["name"] for a in result["artifacts"] if a["name"] in own and a["status"] == "measured"
             and not (same_weights and (a["precision"] == "fp32" or a["name"] == result["reference"]))]
    if not names:
        result["explain"] = None
        result["notes"].append("--explain: no artifact of the bundle was measured in its own runtime here; "
                               "nothing explained")
        return result
    explain_cfg = ExplainConfig(bundle=cfg.bundle, data=cfg.data, split=cfg.split,
                                cases=min(cases, len(result["data"]["cases"])), artifacts=names,
                                baseline_checkpoint=cfg.baseline_checkpoint,
                                threads=threads or result["device"].get("threads") or 2)
    explained = run_explain(explain_cfg).result
    result["explain"] = explained
    n = len(explained["cases"])
    result["verdict"]["lines"].append(f"explanation ({n} case{'' if n == 1 else 's'}): {explained['verdict']}")
    return result
