"""The embedded default job: phantom data + the bundled phantom checkpoint, no download."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from edgeseg.data.io import atomic_write

DEFAULT_CHECKPOINT = "phantom_hybrid.ckpt"
# The phantom recipe the bundled checkpoint was trained on (its val split is what the demo scores).
PHANTOM_RECIPE = {"cases": 80, "size": 128, "dims": 2, "channels": 1, "seed": 0}


def default_checkpoint() -> Path:
    """Path of the small hybrid checkpoint shipped inside the package (trained on phantom data)."""
    return Path(str(resources.files("edgeseg") / "resources" / DEFAULT_CHECKPOINT))


def ensure_phantom(workdir: Path) -> Path:
    """The phantom dataset of :data:`PHANTOM_RECIPE` under ``workdir`` (written once)."""
    from edgeseg.data.phantom import write_phantom_dataset

    data = workdir / "phantom"
    if not (data / "dataset.json").exists():
        write_phantom_dataset(data, **PHANTOM_RECIPE)
    return data


def run_demo(workdir: str | Path, compress_bundle: bool = True) -> tuple[dict, dict | None]:
    """Evaluate the bundled checkpoint on the phantom val split (``workdir/evaluate.json``), then run the main
    job on it: ``compress --int8`` for the CPU targets and TensorRT, into ``workdir/bundle``."""
    from edgeseg.checkpoint import load_checkpoint
    from edgeseg.evaluation import evaluate_checkpoint, evaluation_document
    from edgeseg.overwrite import check_overwrite

    workdir = Path(workdir)
    check_overwrite(workdir / "evaluate.json", force=True)  # a file there that edgeseg did not write stays
    data = ensure_phantom(workdir)
    model, spec = load_checkpoint(default_checkpoint())
    result = evaluate_checkpoint(model, spec, data, "val")
    document = evaluation_document(result)
    atomic_write(workdir / "evaluate.json", lambda tmp: tmp.write_text(json.dumps(document, indent=1)))
    if not compress_bundle:
        return result, None
    from edgeseg.compression.pipeline import CompressConfig, compress

    manifest = compress(CompressConfig(checkpoint=default_checkpoint(), out=workdir / "bundle", calib=data,
                                       calib_size=32, eval_cases=None, force=True))
    return result, manifest
