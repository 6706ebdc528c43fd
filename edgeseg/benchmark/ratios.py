"""Speed-ups with their spread: the headline ratio, the same ratio in each round, and whether the rounds agree.

One definition for ``compress``, ``bench`` and their verdict (benchmarks/SCHEMA.md, "Latency definitions"):
the speed-up of B over A is A's p50 / B's p50, over every timed call of every round; its spread is the
min–max of the per-round ratios (A's round median / B's round median, rounds paired: artifacts alternate
within a round); the rounds *disagree* when that spread, relative to the ratio, exceeds the run's noise.
"""
from __future__ import annotations

import numpy as np

# The smallest noise assumed for a ratio (relative), so that a few rounds that happen to agree do not make a
# small difference look real; a run's fixed workload raises it when its rounds moved more (on the shared 2-core
# development machine they moved 178 % in one run: benchmarks/SCHEMA.md, "Latency definitions").
NOISE_FLOOR = 0.10


def relative_spread(values) -> float | None:
    """(max − min) / median of ``values``; None with fewer than two."""
    v = np.asarray([x for x in values or [] if x], dtype=float)
    return float((v.max() - v.min()) / np.median(v)) if v.size >= 2 else None


def run_noise(workload: dict | None, runtimes=()) -> dict:
    """``{"relative", "source"}``: the noise a ratio's rounds are judged against — the largest round-to-round
    spread of the fixed workload on the runtimes involved (its ONNX Runtime timing when none of them has
    one), never below :data:`NOISE_FLOOR`."""
    timings = {}
    if workload:
        timings = {r: t["latency"]["batch_1"] for r, t in (workload.get("by_runtime") or {}).items()}
        timings.setdefault(workload.get("runtime", "onnxruntime"), workload["latency"]["batch_1"])
    mine = [t for r, t in timings.items() if r in set(runtimes)] or list(timings.values())
    spreads = [s for t in mine if (s := relative_spread(t.get("round_p50_ms"))) is not None]
    if spreads and max(spreads) > NOISE_FLOOR:
        return {"relative": max(spreads), "source": "round-to-round spread of the fixed workload in this run"}
    return {"relative": NOISE_FLOOR, "source": f"floor ({NOISE_FLOOR:.0%})"}


def speedup(slow: dict | None, fast: dict | None, noise: float = NOISE_FLOOR) -> dict | None:
    """``{"value", "low", "high", "rounds", "agree"}``: ``slow``'s p50 / ``fast``'s p50 (timing dicts with
    ``p50_ms`` and ``round_p50_ms``); low/high the min–max of the per-round ratios (None with one round);
    ``agree`` False when they spread by more than ``noise`` of the value (None: cannot tell)."""
    if not slow or not fast or not slow.get("p50_ms") or not fast.get("p50_ms"):
        return None
    value = slow["p50_ms"] / fast["p50_ms"]
    per_round = [a / b for a, b in zip(slow.get("round_p50_ms") or [], fast.get("round_p50_ms") or []) if a and b]
    if len(per_round) < 2:
        return {"value": value, "low": None, "high": None, "rounds": len(per_round), "agree": None}
    low, high = min(per_round), max(per_round)
    return {"value": value, "low": low, "high": high, "rounds": len(per_round), "agree": (high - low) / value <= noise}


def signed(value: float, digits: int) -> str:
    """``+0.12`` / ``−0.05`` / ``0.00`` (no sign on a value that rounds to zero), with a Unicode minus."""
    text = f"{value:+.{digits}f}"
    return f"{0:.{digits}f}" if float(text) == 0 else text.replace("-", "−")


def speedup_words(ratio: dict, slower: str) -> str:
    """``3.01× faster than torch-fp32 (rounds 2.9–3.1)``, saying when the rounds disagree beyond the noise."""
    text = f"{ratio['value']:.2f}× faster than {slower}"
    if ratio.get("low") is not None:
        text += f" (rounds {ratio['low']:.2f}–{ratio['high']:.2f}"
        text += ": they disagree beyond the noise)" if ratio.get("agree") is False else ")"
    return text


def format_speedup(ratio: dict | None) -> str:
    """``7.10× (6.8–7.3)``; ``!`` marks rounds that disagree beyond the noise; ``—`` when there is none."""
    if not ratio or ratio.get("value") is None:
        return "—"
    text = f"{ratio['value']:.2f}×"
    if ratio.get("low") is not None:
        text += f" ({ratio['low']:.1f}–{ratio['high']:.1f})"
    return text + ("!" if ratio.get("agree") is False else "")


def add_ratios(entries: list[dict], reference: str, noise: float) -> None:
    """Each bench entry's speed-ups over the reference, model-only (batch 1) and end to end, with their
    per-round spread: ``ratios.{model,e2e}_speedup_vs_reference`` and ``ratios.{model,e2e}_speedup_spread``."""
    ref = next(e for e in entries if e["name"] == reference)
    for e in entries:
        for key, (a, b) in {"model": ((ref["latency"] or {}).get("batch_1"), (e["latency"] or {}).get("batch_1")),
                            "e2e": (ref["end_to_end"], e["end_to_end"])}.items():
            ratio = speedup(a, b, noise)
            e["ratios"][f"{key}_speedup_vs_reference"] = ratio and ratio["value"]
            e["ratios"][f"{key}_speedup_spread"] = ratio and {k: ratio[k] for k in ("low", "high", "rounds", "agree")}


def stored_speedup(entry: dict, key: str) -> dict | None:
    """The ratio ``key`` (``model`` or ``e2e``) of a bench entry as :func:`speedup` returns it."""
    ratios = entry.get("ratios") or {}
    value = ratios.get(f"{key}_speedup_vs_reference")
    return None if value is None else {"value": value, **(ratios.get(f"{key}_speedup_spread") or {})}
