"""`edgeseg infer`: segment patient images on the device with a bundle's artifact and its runtime only (no
torch). The bundle is verified before any input is read; reading and preprocessing of the next images and
writing of the previous results overlap with inference; a bad input is reported and the others processed.
Volumes are turned to the orientation the model was trained in and their outputs back to their own.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeseg.artifact import Artifact
from edgeseg.bundle import load_bundle, manifest_artifacts
from edgeseg.checkpoint import CheckpointSpec
from edgeseg.errors import EdgesegError
from edgeseg.housekeeping import sweep_stale
from edgeseg.infer.backend import choose_artifact
from edgeseg.infer.inputs import (
    MAX_PIXELS,
    MAX_VOXELS,
    InputItem,
    check_dims,
    check_size,
    discover_inputs,
    from_model_orientation,
    model_spacing,
    read_item,
    to_model_orientation,
    trained_orientation,
)
from edgeseg.infer.ledger import CASES_DIR, OutputLedger, OutputRecorder, input_stamp, output_lock
from edgeseg.infer.outputs import make_out, output_paths, refuse_inputs_inside, write_outputs
from edgeseg.inference import label_map, predict_logits
from edgeseg.progress import progress_bar
from edgeseg.targets import get_target
from edgeseg.validation import paths_as_path

log = logging.getLogger(__name__)


@dataclass
class InferConfig:
    bundle: Path
    inputs: list[Path]
    out: Path
    backend: str = "auto"
    artifact: str | None = None        # a specific artifact of the bundle
    probabilities: bool = False
    end_to_end: bool = True            # uint8 2D images through the artifact's end-to-end graph, when it has one
    overlay: bool = False
    force: bool = False
    resume: bool = False               # skip cases already written completely by this bundle and artifact
    threads: int | None = None         # with ray: per replica
    ray: str | None = None             # "auto" or a cluster address: run on Ray (edgeseg.distributed.infer)
    replicas: int = 1                  # with ray: model replicas (one actor each)
    batch_size: int = 4                # 2D images of one folder go through the model this many at a time
    engine_cache: Path | None = None   # TensorRT: engines built on this device on first use, reused after
    max_pixels: int = MAX_PIXELS       # larger 2D images are refused from their header (memory per image)
    max_voxels: int = MAX_VOXELS       # the same for volumes

    def __post_init__(self):
        from edgeseg.benchmark.settings import check_count

        paths_as_path(self)  # str paths from Python work as well as Path
        for name, lo in (("batch_size", 1), ("replicas", 1), ("threads", 1), ("max_pixels", 1), ("max_voxels", 1)):
            if (value := getattr(self, name)) is not None:
                check_count(value, f"--{name.replace('_', '-')}", lo)


@dataclass
class _Prepared:
    item: InputItem
    image: np.ndarray                  # as read (the overlay is drawn on it)
    geometry: object
    paths: dict
    model_input: np.ndarray | None     # (C, *size) when the image goes to the model whole (batched)
    raw: np.ndarray | None             # (H, W, C) uint8 when the artifact's end-to-end graph takes the image as stored
    model_image: np.ndarray            # the image in the model's training orientation (a view)
    orientation: tuple | None          # (to the model's orientation, back), nibabel transforms


@dataclass
class Clock:
    """Seconds spent per stage (the reader and writer threads overlap with inference)."""

    read_preprocess: float = 0.0
    infer: float = 0.0
    postprocess_write: float = 0.0
    model_calls: int = 0
    model_images: int = 0
    end_to_end_images: int = 0         # images that went through the end-to-end graph (pre/post in the graph)
    per_case: dict = field(default_factory=dict)
    calls: list = field(default_factory=list)  # (ms, images) of every model call, in order


class _Lazy:
    """The logits model, loaded on its first call: with an end-to-end graph, only inputs it cannot take need it."""

    def __init__(self, load):
        self.load, self.runner = load, None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.runner is None:
            self.runner = self.load()
        return self.runner(batch)


class _TimedRunner:
    def __init__(self, runner, clock: Clock, single: bool = False):
        self.runner, self.clock, self.single = runner, clock, single  # single: one image per call (end to end)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.runner(batch)
        self.clock.infer += time.perf_counter() - t0
        images = 1 if self.single else len(batch)
        self.clock.calls.append(((time.perf_counter() - t0) * 1e3, images))
        self.clock.model_calls += 1
        self.clock.model_images += images
        return out


@dataclass
class _Run:
    """What the reader and writer threads share for one `infer` run."""

    cfg: InferConfig
    spec: CheckpointSpec
    image_dims: int | None             # 2 or 3: what the model was given in training (a 2D model may take slices)
    trained: np.ndarray | None         # the training volumes' orientation (nibabel), when recorded
    ledger: OutputRecorder
    clock: Clock
    end_to_end: object | None = None   # the artifact's end-to-end graph, loaded (uint8 2D images go through it)

    def prepare(self, item: InputItem) -> _Prepared:
        """Check the outputs are free and the size allowed, then read, check and (2D) preprocess one input."""
        t0 = time.perf_counter()
        cfg, spec = self.cfg, self.spec
        paths = output_paths(cfg.out, item.case_id, item.kind, cfg.probabilities, cfg.overlay)
        self.ledger.check_free(paths, cfg.force, cfg.resume)
        check_size(item, cfg.max_pixels, cfg.max_voxels)
        item.stamp = input_stamp(item.paths)  # before the read: what was segmented, not what arrived since
        image, geometry = read_item(item)
        check_dims(image, spec, self.image_dims, item.source)
        model_image, orientation = to_model_orientation(image, geometry, self.trained)
        # 2D images batch; volumes and images kept in their own geometry (sliding) go window/slice-wise
        whole = image.ndim - 1 == spec.spatial_dims == 2 and spec.preprocessing.resize != "sliding"
        if whole and self.end_to_end is not None and image.dtype == np.uint8 and orientation is None:
            raw = np.ascontiguousarray(np.moveaxis(image, 0, -1))  # as stored: (H, W, C)
            prepared = _Prepared(item, image, geometry, paths, None, raw, model_image, orientation)
        else:
            prepared = _Prepared(item, image, geometry, paths, spec.preprocessing(model_image) if whole else None,
                                 None, model_image, orientation)
        self.clock.read_preprocess += time.perf_counter() - t0
        return prepared

    def finish(self, prepared: _Prepared, result: np.ndarray) -> None:
        """Back to the input's geometry and orientation, write the outputs, record them in the ledger; ``result``
        is the logits, or the label map of the end-to-end graph."""
        t0 = time.perf_counter()
        if prepared.raw is not None:
            labels, logits = result, None
        else:
            if prepared.model_input is not None:  # back to the input's geometry, as predict_logits does
                result = self.spec.preprocessing.restore(result, prepared.model_image.shape[1:])
            logits = from_model_orientation(result, prepared.orientation)
            labels = label_map(logits)
        self.ledger.begin(prepared.item, prepared.paths)
        write_outputs(prepared.paths, labels, logits, prepared.image, prepared.geometry, self.spec.label_names,
                      seal=lambda path, tmp: self.ledger.seal(prepared.item, path, tmp))
        self.ledger.record(prepared.item, prepared.paths)
        self.clock.postprocess_write += time.perf_counter() - t0


def failure(source: str, exc: Exception) -> dict:
    """One line for a failed input: an EdgesegError's message, else the exception's type and message."""
    message = str(exc) if isinstance(exc, EdgesegError) else f"{type(exc).__name__}: {exc}"
    return {"input": source, "error": " ".join(message.split())[:500]}


def _unique_outputs(cfg: InferConfig, items: list[InputItem], failed: list[dict]) -> list[InputItem]:
    """Drop (as failed) an input whose case id or outputs would be an earlier input's: a.png and a.tif (one case id,
    one sidecar), or a.png and a_overlay.png with --overlay."""
    seen: dict[str, str] = {}
    kept = []
    for item in items:
        names = [p.name for p in output_paths(cfg.out, item.case_id, item.kind, cfg.probabilities, cfg.overlay).values()]
        names.append(f"case {item.case_id}")
        if taken := next((seen[n] for n in names if n in seen), None):
            failed.append({"input": item.source, "error": f"its outputs would take names of those of {taken}"})
        else:
            seen.update((n, item.source) for n in names)
            kept.append(item)
    return kept


def open_bundle(cfg: InferConfig) -> tuple[CheckpointSpec, dict, Artifact, str, str]:
    """``(spec, input layout, artifact, why it was chosen, manifest digest)`` of the verified bundle; with an
    engine cache, the artifact's target prepares what this device needs there (TensorRT: its engine, built on
    first use)."""
    manifest = load_bundle(cfg.bundle)  # every file's sha256 is checked before any input is read
    artifact, why = choose_artifact(manifest_artifacts(manifest), cfg.backend, cfg.artifact, cfg.engine_cache is not None)
    log.info("infer: backend: %s", why)
    if cfg.engine_cache is not None:
        artifact = get_target(artifact.runtime).prepare(Path(cfg.bundle), artifact, cfg.engine_cache)
    return (CheckpointSpec.from_manifest(manifest), manifest.get("input") or {}, artifact, why,
            manifest["manifest_sha256"])


def _inputs(cfg: InferConfig, spec: CheckpointSpec) -> tuple[list[InputItem], list[dict]]:
    """The inputs found and one failure ``{"input", "error"}`` per other input (unreadable or unknown, an output
    name taken by an earlier input); an output folder that is a file or holds an input is refused."""
    items, problems = discover_inputs(cfg.inputs, spec.in_channels)
    failed = [{"input": source, "error": why} for source, why in problems]
    items = _unique_outputs(cfg, items, failed)
    if cfg.out.exists() and not cfg.out.is_dir():
        raise EdgesegError(f"{cfg.out}: exists and is not a folder")
    refuse_inputs_inside(cfg.out, [path for item in items for path in item.paths])
    return items, failed


class _Model:
    """The model side of a run: 2D images go through the model ``batch_size`` at a time, volumes one by one
    (window/slice-wise); each result is handed to the writer thread. A failure stops only its inputs."""

    def __init__(self, run: _Run, runner: _TimedRunner, writer: ThreadPoolExecutor, failed: list[dict]):
        self.run, self.runner, self.writer, self.failed = run, runner, writer, failed
        self.end_to_end = _TimedRunner(run.end_to_end, run.clock, single=True) if run.end_to_end is not None else None
        self.batch: list[_Prepared] = []
        self.writes: list[tuple[InputItem, Future]] = []

    def add(self, prepared: _Prepared, last: bool) -> None:
        """Segment ``prepared`` (batched when it is a whole 2D image; ``last``: no input is waiting after it)."""
        if prepared.raw is not None:
            labels = self.end_to_end(prepared.raw)
            self.run.clock.end_to_end_images += 1
            self.writes.append((prepared.item, self.writer.submit(self.run.finish, prepared, labels)))
            if last:
                self.flush()
            return
        if prepared.model_input is not None:
            self.batch.append(prepared)
            if len(self.batch) == self.run.cfg.batch_size or last:
                self.flush()
            return
        self.flush()
        spec = self.run.spec
        logits = predict_logits(self.runner, prepared.model_image, spec.preprocessing, spec.spatial_dims,
                                spacing=model_spacing(prepared.geometry.spacing, prepared.orientation))
        self.writes.append((prepared.item, self.writer.submit(self.run.finish, prepared, logits)))

    def flush(self) -> None:
        """Run the waiting batch of 2D images through the model."""
        if not self.batch:
            return
        try:
            logits = self.runner(np.stack([p.model_input for p in self.batch]))
            self.writes.extend((p.item, self.writer.submit(self.run.finish, p, lg))
                               for p, lg in zip(self.batch, logits))
        except Exception as exc:  # the model call failed: every image of the batch did
            self.failed.extend(failure(p.item.source, exc) for p in self.batch)
        self.batch.clear()

    def written(self) -> list[str]:
        """Wait for every write; the case ids written (a failed write is recorded as a failure)."""
        done = []
        for item, future in self.writes:
            try:
                future.result()
                done.append(item.case_id)
            except Exception as exc:
                self.failed.append(failure(item.source, exc))
        return done


def segment(run: _Run, runner: _TimedRunner, items: list[InputItem], failed: list[dict],
            show_progress: bool = True) -> list[str]:
    """Read and prepare inputs ahead on one thread, run the model here, write the results on another; returns the
    case ids done (failures go to ``failed``)."""
    cfg = run.cfg
    # read ahead: a batch of 2D images and one more; one volume (each may take gigabytes)
    ahead = cfg.batch_size + 1 if run.spec.spatial_dims == 2 and run.image_dims != 3 else 1
    with ThreadPoolExecutor(1, "edgeseg-read") as reader, ThreadPoolExecutor(1, "edgeseg-write") as writer, \
            progress_bar(disable=not show_progress) as bar:
        task = bar.add_task("infer", total=len(items), info="")
        queue = deque(reader.submit(run.prepare, item) for item in items[:ahead])
        remaining = iter(items[ahead:])
        model = _Model(run, runner, writer, failed)
        for item in items:
            future = queue.popleft()
            if (nxt := next(remaining, None)) is not None:
                queue.append(reader.submit(run.prepare, nxt))
            try:
                model.add(future.result(), last=not queue)
            except Exception as exc:  # one input's failure, whatever it is, stops only that input
                failed.append(failure(item.source, exc))
            bar.advance(task)
        model.flush()
        return model.written()


def load_runners(cfg: InferConfig, artifact: Artifact, clock: Clock) -> tuple[_TimedRunner, object | None, float]:
    """``(logits runner, end-to-end graph or None, seconds to load)`` of the artifact in its runtime."""
    t0 = time.perf_counter()
    target = get_target(artifact.runtime)
    # probabilities need the logits: then every image takes the host path
    end_to_end = (target.load_end_to_end(Path(cfg.bundle), artifact, cfg.threads)
                  if cfg.end_to_end and not cfg.probabilities else None)
    runner = _TimedRunner(_Lazy(lambda: target.load(Path(cfg.bundle), artifact, cfg.threads)) if end_to_end
                          else target.load(Path(cfg.bundle), artifact, cfg.threads), clock)
    return runner, end_to_end, time.perf_counter() - t0


@dataclass
class Plan:
    """What a run knows before any model call: the verified bundle's spec and artifact, the inputs to segment,
    those that failed already, and the cases ``--resume`` skips."""

    spec: CheckpointSpec
    layout: dict
    artifact: Artifact
    why: str
    items: list[InputItem]
    failed: list[dict]
    skipped: list[str]
    ledger: OutputLedger
    swept: list[str]


def plan(cfg: InferConfig) -> Plan:
    """Verify the bundle, find the inputs and check every output path (the rules of :mod:`edgeseg.infer.ledger`)."""
    # temporaries of an edgeseg infer killed while writing here
    swept = [str(p) for p in sweep_stale(cfg.out) + sweep_stale(cfg.out / CASES_DIR)]
    spec, layout, artifact, why, digest = open_bundle(cfg)
    items, failed = _inputs(cfg, spec)
    ledger = OutputLedger(cfg.out, {"bundle": str(cfg.bundle), "manifest_sha256": digest, "artifact": artifact.name})
    items, taken, skipped = ledger.free_inputs(items, cfg.out, cfg.probabilities, cfg.overlay, cfg.force, cfg.resume)
    return Plan(spec, layout, artifact, why, items, failed + taken, skipped, ledger, swept)


def new_run(cfg: InferConfig, spec: CheckpointSpec, layout: dict, ledger: OutputRecorder, clock: Clock,
            end_to_end) -> _Run:
    """What a run's reader and writer threads share; ``ledger`` records the outputs (:mod:`edgeseg.infer.ledger`)."""
    return _Run(cfg, spec, layout.get("image_dims"), trained_orientation(layout.get("axcodes")), ledger, clock,
                end_to_end)


def run_local(cfg: InferConfig) -> dict:
    """Segment every input in this process; returns a summary (cases done, skipped and failed, throughput, time per
    stage, the stale temporary files of killed runs removed from the output folder)."""
    start = time.perf_counter()
    with output_lock(cfg.out) as lock:
        planned, clock = plan(cfg), Clock()
        runner, end_to_end, load_seconds = load_runners(cfg, planned.artifact, clock)
        done: list[str] = []
        if planned.items:  # every output path was checked before any model call
            make_out(cfg.out)
            lock()
            run = new_run(cfg, planned.spec, planned.layout, planned.ledger, clock, end_to_end)
            done = segment(run, runner, planned.items, planned.failed)
    return summary(cfg, planned, done, clock, load_seconds, start)


def summary(cfg, planned: Plan, done, clock: Clock, load_seconds, start) -> dict:
    """The run summary ``edgeseg infer --report`` writes."""
    wall = time.perf_counter() - start
    artifact = planned.artifact
    return {"bundle": str(cfg.bundle), "artifact": artifact.name, "runtime": artifact.runtime,
            "swept": planned.swept,
            "precision": artifact.precision, "backend_choice": planned.why, "out": str(cfg.out),
            "cases": len(done), "done": done, "skipped": planned.skipped, "failed": planned.failed,
            "load_seconds": round(load_seconds, 3),
            "wall_seconds": round(wall, 3), "cases_per_second": round(len(done) / wall, 2) if wall > 0 else None,
            "stages_seconds": {"read_preprocess": round(clock.read_preprocess, 3), "infer": round(clock.infer, 3),
                               "postprocess_write": round(clock.postprocess_write, 3)},
            "model_calls": clock.model_calls, "model_images": clock.model_images,
            "end_to_end_images": clock.end_to_end_images,  # their model time includes the in-graph pre/post
            **_model_timing(cfg, clock)}


def _model_timing(cfg, clock: Clock) -> dict:
    """The model's time per image as bench defines it (benchmarks/SCHEMA.md, "Latency definitions"): the median
    call after the first, per image of the call; the first call (lazy initialisation, warm-up) on its own."""
    steady = clock.calls[1:] or clock.calls
    per_image = [ms / n for ms, n in steady if n]
    return {"model_ms_per_image": round(float(np.median(per_image)), 3) if per_image else None,
            "model_first_call_ms": round(clock.calls[0][0], 3) if clock.calls else None,
            "model_ms_includes_first_call": len(clock.calls) == 1,
            "model_batch": max((n for _, n in clock.calls), default=None),
            "threads": cfg.threads or "runtime default"}
