import copy
import json
import os
from pathlib import Path

import pytest
import torch
import torchvision_cpu  # noqa: F401  (before anything imports torchvision: see its docstring)
from gate_support import _gate, _scale

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


@pytest.fixture(scope="session")
def gate_result(bundle, phantom_demo):
    """A real phantom bench run (ONNX Runtime + OpenVINO, 2 rounds) whose copies the gate tests edit."""
    from edgeseg.benchmark.harness import BenchConfig, run_bench

    return run_bench(BenchConfig(bundle=bundle, data=phantom_demo, max_cases=4, repeats=6, rounds=2, warmup=1,
                                 batch_size=0, e2e_cases=0, threads=2, backends=["onnxruntime", "openvino"]))


@pytest.fixture(scope="session")
def steady(gate_result):
    """The real result with every timing's rounds made equal: no noise band, so limits decide alone."""
    out = copy.deepcopy(gate_result)
    for entry in [*out["artifacts"], out["workload"], *out["workload"]["by_runtime"].values()]:
        if entry.get("latency"):
            _scale(entry["latency"]["batch_1"], 1.0)
    return out


@pytest.fixture
def gate_files(steady, tmp_path):
    """write(result_dict) → path; the baseline is written from the steady result."""
    counter = iter(range(1000))

    def write(res):
        path = tmp_path / f"r{next(counter)}.json"
        path.write_text(json.dumps(res))
        return path

    base = tmp_path / "baseline.json"
    assert _gate(write(steady), "--baseline", base, "--update-baseline").exit_code == 0
    return write, base


@pytest.fixture(scope="session")
def explained(bundle, phantom_demo, tmp_path_factory):
    """`edgeseg explain` of the phantom bundle (ONNX Runtime INT8/FP32, OpenVINO INT8) on 3 cases: (folder, result)."""
    from typer.testing import CliRunner

    from edgeseg.cli import app

    out = tmp_path_factory.mktemp("explain") / "ex"
    args = ["explain", bundle, "--data", phantom_demo, "--cases", 3, "--rise-masks", 48, "--occlusion-grid", 4,
            "--out", out, "--artifacts", "x86-onnxruntime-int8,x86-avx512-openvino-int8,x86-onnxruntime-fp32"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "explain.json").read_text())


# Fixtures too costly to build once per xdist worker: the tests using one run on one worker (README's test
# command passes --dist loadgroup; other tests are spread as with the default --dist load). pytest 9.2 broke
# xdist's grouping without a word (pytest-dev/pytest-xdist#1386): the dev extra keeps pytest < 9.2.
_ONE_WORKER = ("explained", "ray_local")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        for name in _ONE_WORKER:
            if name in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(name))
                break


def pytest_configure(config):
    """Say so when --dist loadgroup will not group (each grouped fixture built on every worker: a slower suite)."""
    major, minor = (int(p) for p in pytest.__version__.split(".")[:2])
    if getattr(config.option, "dist", None) == "loadgroup" and (major, minor) >= (9, 2):
        config.issue_config_time_warning(pytest.PytestConfigWarning(
            f"pytest {pytest.__version__}: pytest-xdist's --dist loadgroup does not group tests on pytest >= 9.2 "
            "(pytest-dev/pytest-xdist#1386); the dev extra pins pytest < 9.2"), stacklevel=2)
