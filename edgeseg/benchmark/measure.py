"""``bench``'s measuring stage: load every candidate that runs here, check each on the first case, score them all
on the same cases against the reference, and time them — each in its own process per round, interleaved with
the fixed workload."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeseg.artifact import Artifact
from edgeseg.benchmark.inputs import case_model_input
from edgeseg.benchmark.isolated import measure_isolated
from edgeseg.benchmark.runners import load_runners
from edgeseg.errors import EdgesegError
from edgeseg.evaluation import compare_predictors
from edgeseg.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass
class Measured:
    """What the measuring stage found: ``runners`` of the artifacts that ran, ``(status, reason)`` of the
    others, accuracy ``scores`` and ``latency`` summaries, by artifact name."""

    runners: dict
    others: dict[str, tuple[str, str]]
    scores: dict[str, dict]
    latency: dict[str, dict]
    under_load: dict[str, dict] = field(default_factory=dict)  # share label → artifact name → latency (--load)


def _set_torch_threads(threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def _smoke_test(runners: dict, others: dict, sample: np.ndarray, reference: str) -> None:
    """Run each loaded artifact once; one that fails is reported and left out, the reference must work."""
    for name in list(runners):
        try:
            out = runners[name](sample)
            if not np.isfinite(out).all():
                raise ValueError("non-finite logits")
        except Exception as exc:  # noqa: BLE001 — any runtime error disqualifies this artifact only
            if name == reference:
                raise EdgesegError(f"the reference {name} failed on the first case: {exc}") from None
            others[name] = ("not_measured", f"failed on the first case: {type(exc).__name__}: {str(exc)[:200]}")
            del runners[name]


def _measure_latency(run, timed: list[Artifact], sample: np.ndarray, work: Path) -> dict:
    """Isolated latency of ``timed`` and, interleaved with them, of the fixed workload (:mod:`.workload`) on
    each of their CPU runtimes."""
    from edgeseg.benchmark.workload import workload_artifacts

    cfg = run.cfg
    timed = [*timed, *workload_artifacts(work, {a.runtime for a in timed})]
    thread_map = {a.name: run.threads for a in timed}
    e2e = {"data": str(run.dataset.root), "cases": run.case_ids[: cfg.e2e_cases],
           "preprocessing": run.spec.preprocessing.to_dict(), "spatial_dims": run.spec.spatial_dims} \
        if cfg.e2e_cases > 0 else None
    batches = (cfg.batch_size,) if cfg.batch_size > 1 else ()
    with progress_bar() as bar:
        task = bar.add_task("latency (one process per artifact and round)", total=len(timed) * cfg.rounds, info="")
        return measure_isolated(run.bundle, timed, sample, thread_map, repeats=cfg.repeats, rounds=cfg.rounds,
                                warmup=cfg.warmup, batch_sizes=batches, end_to_end=e2e,
                                progress=lambda: bar.advance(task))


def measure(run, candidates: list[Artifact], work: Path) -> Measured:
    """Score ``candidates`` on the cases of ``run`` (a :class:`edgeseg.benchmark.harness.BenchRun`) and time them (when
    latency is asked for); the reference must load and run, any other artifact may fail on its own."""
    reference = run.reference.name
    runners, others = load_runners(candidates, run.bundle, {a.name: run.threads for a in candidates})
    if reference not in runners:
        raise EdgesegError(f"the reference {reference} cannot run here: {others[reference][1]}")
    sample = case_model_input(run.spec, run.dataset, run.case_ids[0])
    _smoke_test(runners, others, sample, reference)
    _set_torch_threads(run.threads)
    log.info("bench: %d runnable of %d artifacts on %d %s %s cases, %d threads", len(runners), len(candidates),
             len(run.case_ids), run.dataset.name, run.cfg.split, run.threads)
    scores = compare_predictors(runners, reference, run.spec, run.dataset, run.case_ids, "accuracy", full=True)
    timed = [a for a in candidates if a.name in runners and a.name not in others]
    latency = _measure_latency(run, timed, sample, work) if run.cfg.latency else {}
    under_load = _measure_under_load(run, timed, sample) if run.cfg.latency and run.cfg.load else {}
    return Measured(runners, others, scores, latency, under_load)


def _measure_under_load(run, timed: list[Artifact], sample: np.ndarray) -> dict:
    """Every timed artifact again with one core kept busy each share of ``--load`` (:mod:`.load`)."""
    from edgeseg.benchmark.load import measure_under_load

    cfg = run.cfg
    with progress_bar() as bar:
        task = bar.add_task(f"latency under load {', '.join(f'{s:g}' for s in cfg.load)}",
                            total=len(timed) * cfg.rounds * len(cfg.load), info="")
        return measure_under_load(run.bundle, timed, sample, {a.name: run.threads for a in timed}, cfg.load,
                                  cfg.repeats, cfg.rounds, cfg.warmup, progress=lambda: bar.advance(task))
