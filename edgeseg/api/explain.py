"""``edgeseg.explain``: explanation drift of a bundle's artifacts from Python (what ``edgeseg explain`` runs)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.api.bundle import Bundle
from edgeseg.api.options import check_options, names


@dataclass
class ExplainResult:
    """``data``: the result (schema ``edgeseg-explain``); ``outcome`` keeps the maps the pictures are drawn from."""

    data: dict
    outcome: Any

    @property
    def verdict(self) -> str:
        """Which artifact's explanation moved most, on which label, and which stayed closest."""
        return self.data["verdict"]

    def to_markdown(self) -> str:
        from edgeseg.explanation.report import markdown

        return markdown(self.data)

    def write(self, out: str | os.PathLike, force: bool = False) -> dict[str, Path]:
        """Write ``explain.json``, ``explain.md`` and the pictures into the folder ``out`` (``edgeseg explain
        --out``); a file is replaced only with ``force`` and only if edgeseg wrote it."""
        from edgeseg.explanation.report import write_outputs

        return write_outputs(self.outcome, Path(out), force)


def explain(bundle: Bundle | str | os.PathLike, data: str | os.PathLike, **options: Any) -> ExplainResult:
    """Explain the FP32 reference and every artifact of ``bundle`` on the cases of ``data`` and measure how far each
    artifact's maps moved (``edgeseg explain``). Options: the fields of :class:`edgeseg.explanation.ExplainConfig`
    (``split``, ``cases``, ``labels``, ``artifacts``, ``baseline_checkpoint``, ``threads``, ``sanity_cases``,
    ``gradcam_plus_plus``) and ``settings`` (a :class:`edgeseg.explanation.MapSettings`)."""
    from edgeseg.explanation import ExplainConfig, run_explain

    check_options(options, set(ExplainConfig.__dataclass_fields__) - {"bundle", "data"}, "explain()")
    for key in ("labels", "artifacts"):
        if key in options:
            options[key] = names(options[key])
    path = bundle.path if isinstance(bundle, Bundle) else bundle
    outcome = run_explain(ExplainConfig(bundle=path, data=data, **options))
    return ExplainResult(outcome.result, outcome)
