"""`edgeseg infer`: segment patient images on the device with a bundle's artifact and its runtime only (no
torch). The bundle is verified before any input is read; reading and preprocessing of the next images and
writing of the previous results overlap with inference; a bad input is reported and the others processed.
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..bundle import load_bundle
from ..checkpoint import CheckpointSpec
from ..errors import EdgesegError
from ..inference import label_map, predict_logits
from ..progress import console, progress_bar
from ..targets import get_target
from .backend import choose_artifact
from .inputs import InputItem, discover_inputs, read_item
from .outputs import check_free, output_paths, write_outputs


@dataclass
class InferConfig:
    bundle: Path
    inputs: list[Path]
    out: Path
    backend: str = "auto"
    artifact: str | None = None        # a specific artifact of the bundle
    probabilities: bool = False
    overlay: bool = False
    force: bool = False
    threads: int | None = None
    batch_size: int = 4                # 2D images of one folder go through the model this many at a time
    engine_cache: Path | None = None   # TensorRT: engines built on this device on first use, reused after


@dataclass
class _Prepared:
    item: InputItem
    image: np.ndarray
    geometry: object
    paths: dict
    model_input: np.ndarray | None     # (C, *size) when the image goes to the model whole (batched)


@dataclass
class _Clock:
    """Seconds spent per stage (the reader and writer threads overlap with inference)."""

    read_preprocess: float = 0.0
    infer: float = 0.0
    postprocess_write: float = 0.0
    model_calls: int = 0
    model_images: int = 0
    per_case: dict = field(default_factory=dict)


class _TimedRunner:
    def __init__(self, runner, clock: _Clock):
        self.runner, self.clock = runner, clock

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.runner(batch)
        self.clock.infer += time.perf_counter() - t0
        self.clock.model_calls += 1
        self.clock.model_images += len(batch)
        return out


def _check_dims(image: np.ndarray, spec: CheckpointSpec, image_dims: int | None, source: str) -> None:
    dims = image.ndim - 1
    if dims not in (2, 3):
        raise EdgesegError(f"{source}: expected a 2D image or a 3D volume, got shape {image.shape}")
    if image.shape[0] != spec.in_channels:
        names = ", ".join(spec.preprocessing.channel_names)
        raise EdgesegError(f"{source}: the model takes {spec.in_channels} channel(s) ({names}), the input has "
                           f"{image.shape[0]}")
    if dims < spec.spatial_dims or (image_dims is not None and dims != image_dims):
        expected = image_dims or spec.spatial_dims
        raise EdgesegError(f"{source}: a {dims}D input to a model made for {expected}D "
                           f"{'volumes' if expected == 3 else 'images'}")
    if not np.all(np.isfinite(image)):
        raise EdgesegError(f"{source}: the image contains NaN or Inf values")


def _prepare(item: InputItem, spec, image_dims, cfg: InferConfig, clock: _Clock) -> _Prepared:
    t0 = time.perf_counter()
    paths = output_paths(cfg.out, item.case_id, item.kind, cfg.probabilities, cfg.overlay)
    check_free(paths, cfg.force)
    image, geometry = read_item(item)
    _check_dims(image, spec, image_dims, item.source)
    whole = image.ndim - 1 == spec.spatial_dims == 2  # 2D images batch; volumes go window/slice-wise
    prepared = _Prepared(item, image, geometry, paths, spec.preprocessing(image) if whole else None)
    clock.read_preprocess += time.perf_counter() - t0
    return prepared


def _finish(prepared: _Prepared, logits: np.ndarray, spec, clock: _Clock) -> None:
    t0 = time.perf_counter()
    if prepared.model_input is not None:  # back to the input's geometry, as predict_logits does
        logits = spec.preprocessing.restore(logits, prepared.image.shape[1:])
    write_outputs(prepared.paths, label_map(logits), logits, prepared.image, prepared.geometry)
    clock.postprocess_write += time.perf_counter() - t0


def run_infer(cfg: InferConfig) -> dict:
    """Segment every input; returns a summary (cases done and failed, throughput, time per stage)."""
    start = time.perf_counter()
    manifest = load_bundle(cfg.bundle)  # every file's sha256 is checked before any input is read
    spec = CheckpointSpec.from_dict({**manifest["model"], "preprocessing": manifest["preprocessing"]})
    image_dims = (manifest.get("input") or {}).get("image_dims")
    artifact, why = choose_artifact(manifest, cfg.backend, cfg.artifact, cfg.engine_cache is not None)
    console.print(f"[bold cyan]infer[/] backend: {why}")
    if artifact["runtime"] == "tensorrt" and cfg.engine_cache is not None:
        from ..targets.trt_engine_cache import ensure_engine

        engine, built = ensure_engine(Path(cfg.bundle), artifact, cfg.engine_cache)
        console.print(f"[bold cyan]infer[/] TensorRT engine {'built' if built else 'reused'}: {engine}")
        artifact = {**artifact, "engine_path": str(engine)}
    clock = _Clock()
    t0 = time.perf_counter()
    runner = _TimedRunner(get_target(artifact["runtime"]).load(Path(cfg.bundle), artifact, cfg.threads), clock)
    load_seconds = time.perf_counter() - t0
    items, problems = discover_inputs(cfg.inputs, spec.in_channels)
    failed = [{"input": source, "error": why} for source, why in problems]
    seen: dict[str, str] = {}
    for item in list(items):  # e.g. a.png and a.tif: both would write a.png
        if item.case_id in seen:
            failed.append({"input": item.source, "error": f"same output name {item.case_id!r} as {seen[item.case_id]}"})
            items.remove(item)
        seen.setdefault(item.case_id, item.source)
    if cfg.out.exists() and not cfg.out.is_dir():
        raise EdgesegError(f"{cfg.out}: exists and is not a folder")
    if not items:
        return _summary(cfg, artifact, why, [], failed, clock, load_seconds, start)
    cfg.out.mkdir(parents=True, exist_ok=True)
    done: list[str] = []
    writes: list[tuple[InputItem, Future]] = []
    with ThreadPoolExecutor(1, "edgeseg-read") as reader, ThreadPoolExecutor(1, "edgeseg-write") as writer, \
            progress_bar() as bar:
        task = bar.add_task("infer", total=len(items), info="")
        queue = deque(reader.submit(_prepare, item, spec, image_dims, cfg, clock) for item in items[:cfg.batch_size + 1])
        remaining = iter(items[cfg.batch_size + 1:])
        batch: list[_Prepared] = []

        def flush():
            if batch:
                logits = runner(np.stack([p.model_input for p in batch]))
                for p, lg in zip(batch, logits):
                    writes.append((p.item, writer.submit(_finish, p, lg, spec, clock)))
                batch.clear()

        for item in items:
            future = queue.popleft()
            if (nxt := next(remaining, None)) is not None:
                queue.append(reader.submit(_prepare, nxt, spec, image_dims, cfg, clock))
            try:
                prepared = future.result()
                if prepared.model_input is not None:
                    batch.append(prepared)
                    if len(batch) == cfg.batch_size or not queue:
                        flush()
                else:
                    flush()
                    logits = predict_logits(runner, prepared.image, spec.preprocessing, spec.spatial_dims)
                    writes.append((item, writer.submit(_finish, prepared, logits, spec, clock)))
            except EdgesegError as exc:
                failed.append({"input": item.source, "error": str(exc)})
            bar.advance(task)
        flush()
        for item, future in writes:
            try:
                future.result()
                done.append(item.case_id)
            except EdgesegError as exc:
                failed.append({"input": item.source, "error": str(exc)})
    return _summary(cfg, artifact, why, done, failed, clock, load_seconds, start)


def _summary(cfg, artifact, why, done, failed, clock: _Clock, load_seconds, start) -> dict:
    wall = time.perf_counter() - start
    return {"bundle": str(cfg.bundle), "artifact": artifact["name"], "runtime": artifact["runtime"],
            "precision": artifact["precision"], "backend_choice": why, "out": str(cfg.out),
            "cases": len(done), "done": done, "failed": failed, "load_seconds": round(load_seconds, 3),
            "wall_seconds": round(wall, 3), "cases_per_second": round(len(done) / wall, 2) if wall > 0 else None,
            "stages_seconds": {"read_preprocess": round(clock.read_preprocess, 3), "infer": round(clock.infer, 3),
                               "postprocess_write": round(clock.postprocess_write, 3)},
            "model_calls": clock.model_calls, "model_images": clock.model_images,
            "model_ms_per_image": round(1e3 * clock.infer / clock.model_images, 3) if clock.model_images else None}
