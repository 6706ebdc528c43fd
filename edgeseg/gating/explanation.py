"""The gate's explanation checks: does each artifact still look where the FP32 reference looked?

Input is an ``edgeseg explain`` result, or the ``explain`` section of a bench result (``bench --explain``). The
limit is on the *drift* of the headline forward-only map (the first of RISE, occlusion that passed its sanity
checks), per artifact and label: ``1 − mean rank correlation`` (default) or ``1 − mean top-10 % IoU`` over the
explained cases. The mean is judged; its bootstrap interval and the worst case are in the message. Opt-in
(``attention=DRIFT``): the drift of each attention gate's coefficients (Attention U-Net, the hybrid), the same
measure per gate and artifact.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.errors import InputError, UsageError

MEASURES = {"rank": "rank_correlation", "iou": "top10_iou"}
MEASURE_TEXT = {"rank_correlation": "ρ", "top10_iou": "top-10 % IoU"}
DEFAULT_MAX_DRIFT = 0.1  # ρ ≥ 0.9: every INT8 artifact measured on chest and Kvasir held it (docs/explain.md)
EXPLAIN_SCHEMA = "edgeseg-explain"


@dataclass
class ExplanationLimits:
    """Largest drift allowed (``1 − measure``), for every label or per label."""

    measure: str = "rank_correlation"
    max_drift: float = DEFAULT_MAX_DRIFT
    per_label: dict[str, float] = field(default_factory=dict)
    attention: float | None = None  # the attention gates' limit; None: they are reported, not gated

    def limit(self, label: str) -> float:
        return self.per_label.get(label, self.max_drift)


def parse_explanation_limits(text: str | float | dict) -> ExplanationLimits:
    """``"0.1"``, ``"iou:0.4"``, ``"rank:0.05,lung=0.1,attention=0.2"`` (or a TOML table ``{measure = "iou",
    default = 0.4, lung = 0.3}``) → :class:`ExplanationLimits`. Drift = 1 − the measure: 0.1 on rank asks ρ ≥ 0.9;
    ``attention`` is the limit of every attention gate."""
    if isinstance(text, dict):
        table = dict(text)
        measure = str(table.pop("measure", "rank"))
        items = [f"{v}" if k == "default" else f"{k}={v}" for k, v in table.items()]
    else:
        raw = str(text).strip()
        measure, _, rest = raw.partition(":") if ":" in raw else ("rank", "", raw)
        items = [s.strip() for s in rest.split(",") if s.strip()]
    if measure.strip() not in MEASURES:
        raise UsageError(f"--max-explanation-drift: measure must be rank or iou, got {measure!r}")
    limits = ExplanationLimits(MEASURES[measure.strip()])
    try:
        for item in items:
            name, _, value = item.rpartition("=")
            drift = float(value)
            if not 0 <= drift <= 2:
                raise ValueError
            if name.strip() == "attention":
                limits.attention = drift
            elif name:
                limits.per_label[name.strip()] = drift
            else:
                limits.max_drift = drift
    except ValueError:
        raise UsageError(f"--max-explanation-drift expects [rank:|iou:]DRIFT[,LABEL=DRIFT…] with drift = 1 − the "
                         f"measure, 0…2 (e.g. 0.1 or iou:0.4,lung=0.3); got {text!r}") from None
    return limits


def read_gate_input(path: Path) -> tuple[str, dict]:
    """``(schema, document)`` of a gate input, read once: a bench result or an explain result, either checked."""
    from edgeseg.benchmark.schema import check_result, read_document

    doc = read_document(path, "result")
    if isinstance(doc, dict) and doc.get("schema") == EXPLAIN_SCHEMA:
        return EXPLAIN_SCHEMA, check_explain(doc, path)
    return "edgeseg-bench", check_result(doc, path)


def check_explain(doc: dict, source) -> dict:
    """``doc`` if it is an explain result of schema version 1 with what the gate reads; else a one-line error."""
    if not isinstance(doc, dict) or doc.get("schema") != EXPLAIN_SCHEMA or doc.get("schema_version") != 1:
        raise InputError(f"{source}: not an edgeseg explain result of schema version 1")
    if problem := _explain_problem(doc):
        raise InputError(f"{source}: damaged explain result ({problem})")
    return doc


def _explain_problem(doc: dict) -> str | None:
    """What the gate would trip over in ``doc``, or None."""
    def number(value) -> bool:
        return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == value)

    if not isinstance(doc.get("labels"), list) or not all(isinstance(x, str) for x in doc["labels"]):
        return "labels"
    if not isinstance(doc.get("artifacts"), dict) or not isinstance(doc.get("not_explained", {}), dict):
        return "artifacts"
    if not (doc.get("headline_method") is None or isinstance(doc["headline_method"], str)):
        return "headline_method"
    for name, entry in doc["artifacts"].items():
        methods = entry.get("methods") if isinstance(entry, dict) else None
        if not isinstance(methods, dict) or not all(isinstance(rows, dict) for rows in methods.values()):
            return f"artifact {name}"
        attention = entry.get("attention") or {}
        if not isinstance(attention, dict):
            return f"artifact {name}: attention"
        rows = [(f"label {label}", row) for m, r in methods.items() if m == doc.get("headline_method")
                for label, row in r.items()]
        for where, row in [*rows, *((f"attention gate {gate}", row) for gate, row in attention.items())]:
            stats = [row.get(m) if isinstance(row, dict) else None for m in MEASURES.values()]
            if not all(isinstance(st, dict) and all(number(st.get(k)) for k in ("mean", "low", "high"))
                       for st in stats):
                return f"artifact {name}, {where}"
            worst = row.get("worst") or []
            if not isinstance(worst, list) or not all(isinstance(w, dict) and isinstance(w.get("case"), str)
                                                      and number(w.get("rank_correlation")) for w in worst):
                return f"artifact {name}, {where}: worst cases"
    return None


def explanation_checks(doc: dict, limits: ExplanationLimits, source: str = "") -> tuple[list, list[str]]:
    """``(checks, notes)``: one check per artifact and label of ``doc``'s headline map against ``limits``."""
    from edgeseg.gating.check import Check

    tag = f" [{source}]" if source else ""
    method, measure = doc.get("headline_method"), limits.measure
    if method is None:
        return [Check("(every artifact)", f"explanation{tag}", False, None, None, "a sane map",
                      "no forward-only map passed its sanity checks: there is no explanation drift to judge")], []
    checks, notes = [], []
    for name, why in doc["not_explained"].items():
        if str(why).startswith("sha256"):
            checks.append(Check(name, f"explained{tag}", False, None, None, "verified", f"not explained: {why}"))
        else:
            notes.append(f"{name}: not explained here ({why}); its explanation is not gated")
    for name, entry in doc["artifacts"].items():
        labels = entry["methods"].get(method)
        if not isinstance(labels, dict) or "withheld" in labels:
            checks.append(Check(name, f"explanation{tag}", False, None, None, f"a {method} map",
                                f"no {method} map for this artifact in the result: its explanation cannot be judged"))
            continue
        for label in doc["labels"]:
            row = labels.get(label)
            if row is None or row.get("cases") == 0:
                notes.append(f"{name}: {label} not predicted by the reference on these cases; not gated")
                continue
            checks.append(_label_check(name, label, row, method, measure, limits.limit(label), tag))
        if limits.attention is not None:
            checks += _attention_checks(doc, name, entry, limits, tag, notes)
    return checks, notes


def _attention_checks(doc: dict, name: str, entry: dict, limits: ExplanationLimits, tag: str, notes: list) -> list:
    """One check per attention gate of an artifact (``attention=`` in the limits); a model without gates has none."""
    from edgeseg.gating.check import Check

    gates = (doc.get("attention_gates") or {}).get("gates") or []
    if not gates:
        notes.append("attention=: the model has no attention gates; nothing to gate there")
        return []
    rows = entry.get("attention") or {}
    if not rows:
        why = ((doc.get("attention_gates") or {}).get("not_read") or {}).get(name, "not in the result")
        return [Check(name, f"attention gates{tag}", False, None, None, "read", f"the gates were not read: {why}")]
    return [_label_check(name, f"gate {gate}", row, "attention", limits.measure, limits.attention, tag)
            for gate, row in rows.items()]


def _label_check(name: str, label: str, row: dict, method: str, measure: str, limit: float, tag: str):
    from edgeseg.gating.check import Check

    stats, symbol = row[measure], MEASURE_TEXT[measure]
    what = f"explanation {label} ({method} {symbol}){tag}"
    if stats["mean"] is None:
        return Check(name, what, False, 1.0, None, f"≥ {1 - limit:.3g}", f"{symbol} undefined on every case "
                     "(a constant map): the explanation cannot be compared")
    drift = 1 - stats["mean"]
    spread = f" [{stats['low']:.3f}, {stats['high']:.3f}]" if stats.get("low") is not None else ""
    worst = (row.get("worst") or [None])[0]
    worst_text = f"; worst case {worst['case']} ρ {worst['rank_correlation']:.3f}" if worst and \
        worst.get("rank_correlation") is not None else ""
    message = (f"mean {symbol} {stats['mean']:.3f}{spread} over {row.get('cases', stats.get('n'))} cases: drift "
               f"{drift:.3f} (limit {limit:g}){worst_text}")
    return Check(name, what, drift <= limit, 1.0, float(stats["mean"]), f"≥ {1 - limit:.3g}", message)


def gather_explanations(bench_runs: list[tuple[Path, dict]], explains: list[tuple[Path, dict]]) -> list[tuple[str, dict]]:
    """Every explanation to gate, ``(source, doc)``: the explain results given, and each bench result's ``explain``
    section. An explain result must be of the bench results' bundle (its manifest digest)."""
    digests = {r["bundle"]["manifest_sha256"] for _, r in bench_runs}
    names = [Path(p).name for p, _ in [*explains, *bench_runs]]

    def source(path) -> str:  # the file's name, with its folder where two inputs share a name
        path = Path(path)
        return f"{path.parent.name}/{path.name}" if names.count(path.name) > 1 else path.name

    out = []
    for path, doc in explains:
        digest = doc.get("bundle_manifest_sha256")
        if digests and digest not in digests:
            raise InputError(f"{path}: explains another bundle than the bench results (manifest "
                             f"{str(digest)[:12] if digest else 'not recorded'} vs {sorted(d[:12] for d in digests)})")
        out.append((source(path), doc))
    for path, run in bench_runs:
        if run.get("explain"):
            out.append((source(path), check_explain(run["explain"], f"{path} (explain section)")))
    return out


def resolve_limits(docs: list, spec: str | float | dict | None) -> ExplanationLimits:
    """The limits for ``docs``: ``spec`` parsed, or the default; a limit asked for without any explanation to judge
    is unusable input."""
    if spec is not None and not docs:
        raise InputError("--max-explanation-drift: none of RESULTS has an explanation; pass an `edgeseg explain` "
                         "result or bench with --explain")
    return parse_explanation_limits(DEFAULT_MAX_DRIFT if spec is None else spec)


def gate_explanations(docs: list[tuple[str, dict]], limits: ExplanationLimits) -> tuple[list, list[str]]:
    """The checks and notes of every explanation in ``docs``; checks are tagged by source when there are several."""
    checks, notes = [], []
    explained = sorted({label for _, doc in docs for label in doc["labels"]})
    if unknown := set(limits.per_label) - set(explained):
        raise UsageError(f"--max-explanation-drift names {sorted(unknown)}; the explained labels are {explained}")
    for source, doc in docs:
        more, more_notes = explanation_checks(doc, limits, source if len(docs) > 1 else "")
        checks += more
        notes += more_notes
    return checks, list(dict.fromkeys(notes))


def with_explanations(report: dict, docs: list[tuple[str, dict]], limits: ExplanationLimits) -> dict:
    """A :func:`edgeseg.gating.gate_runs` report with the explanation checks of ``docs`` added (and its decision)."""
    if not docs:
        return report
    checks, notes = gate_explanations(docs, limits)
    report["checks"] = [*report["checks"], *checks]
    report["notes"] = [*report["notes"], *notes]
    report["passed"] = all(c.passed for c in report["checks"])
    report["limits"]["explanation"] = _limits_dict(limits)
    return report


def explanation_report(docs: list[tuple[str, dict]], limits: ExplanationLimits, baseline_given=None) -> dict:
    """The gate report of explanations alone: drift against each result's FP32 reference, no baseline."""
    if not docs:
        raise UsageError("no bench result among RESULTS and no explanation either: nothing to gate")
    checks, notes = gate_explanations(docs, limits)
    if baseline_given is not None:
        name = baseline_given if isinstance(baseline_given, (str, Path)) else "the baseline given"
        notes.append(f"{name} not used: explanations are judged against their FP32 reference")
    return {"passed": all(c.passed for c in checks), "checks": checks, "notes": notes, "mode": "explanation",
            "metric": MEASURE_TEXT[limits.measure], "device_class": "any", "runs": len(docs), "baseline_runs": None,
            "limits": {"explanation": _limits_dict(limits)}}


def _limits_dict(limits: ExplanationLimits) -> dict:
    return {"measure": limits.measure, "max_drift": limits.max_drift, "per_label": dict(limits.per_label),
            "attention": limits.attention}
