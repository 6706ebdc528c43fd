import os
from pathlib import Path

import pytest
import torch

from edgeseg.data import data_root, write_phantom_dataset

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def phantom2d(tmp_path_factory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("ph2d") / "ds", cases=12, size=64, seed=3)


@pytest.fixture(scope="session")
def phantom3d(tmp_path_factory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("ph3d") / "ds", cases=3, size=32, dims=3, channels=2, seed=4)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_root()
    if not (root / "Dataset002_ChestXrayLungs").is_dir():
        pytest.skip(f"real datasets not found at {root} (set EDGESEG_DATA)")
    return root


@pytest.fixture(scope="session")
def phantom_demo(tmp_path_factory) -> Path:
    """The embedded default's phantom dataset (what `edgeseg demo` writes)."""
    from edgeseg.demo import ensure_phantom

    return ensure_phantom(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def bundle(phantom_demo, tmp_path_factory) -> Path:
    """One INT8 bundle of the bundled phantom checkpoint (ONNX Runtime, OpenVINO, TensorRT QDQ), built once."""
    from typer.testing import CliRunner

    from edgeseg.cli import app
    from edgeseg.demo import default_checkpoint

    out = tmp_path_factory.mktemp("bundles") / "phantom"
    args = ["compress", default_checkpoint(), "--int8", "--calib", phantom_demo, "--calib-size", 16,
            "--eval-cases", 8, "--out", out]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return out
