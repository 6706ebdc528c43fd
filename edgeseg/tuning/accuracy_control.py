"""NNCF ``quantize_with_accuracy_control`` driven by edgeseg's Dice limits (the OpenVINO target's second search).

NNCF takes one scalar metric and an allowed drop. Its metric here is the *slack* of the Dice limits on the
tuning cases (:meth:`DiceLimits.slack`: points left before the tightest per-label limit breaks, −100 per
vanished structure), so "drop ≤ slack of the FP32 model" means "every limit holds", and its per-case values
(mean ΔDice over labels) pick NNCF's ranking subset. The result is scored again by edgeseg's own check.
"""
from __future__ import annotations

import time

import numpy as np


class NncfAccuracyControl:
    """A build option for the OpenVINO target: quantize with NNCF accuracy control instead of ``nncf.quantize``.

    The quantized model is kept, so the trial that scored it and the bundle's final build write the same model
    (NNCF's search runs once)."""

    def __init__(self, scorer, limits):
        self.scorer, self.limits = scorer, limits
        self.model = None
        self.seconds: float | None = None

    def validate(self, compiled, indices) -> tuple[float, list[float]]:
        output = compiled.output(0)

        def run(batch: np.ndarray) -> np.ndarray:
            return np.asarray(compiled(np.ascontiguousarray(batch, dtype=np.float32))[output])

        score = self.scorer.score(run, list(indices))
        return self.limits.slack(score), score["per_case"]

    def quantize(self, model, calibration, kwargs: dict):
        """``nncf.quantize_with_accuracy_control`` with the same settings ``nncf.quantize`` would get."""
        import nncf

        if self.model is None:
            zero = {"delta": dict.fromkeys(self.scorer.reference_scores[0], 0.0), "vanished": []}
            t0 = time.perf_counter()
            self.model = nncf.quantize_with_accuracy_control(
                model, calibration, nncf.Dataset(list(range(len(self.scorer.cases)))), self.validate,
                max_drop=self.limits.slack(zero), drop_type=nncf.DropType.ABSOLUTE, **kwargs)
            self.seconds = round(time.perf_counter() - t0, 1)
        return self.model.clone()

    def describe(self) -> str:
        return (f"quantize_with_accuracy_control, metric = slack of the Dice limits on "
                f"{len(self.scorer.cases)} tuning cases ({self.seconds} s)")
