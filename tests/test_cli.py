import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from edgeseg.checkpoint import read_spec
from edgeseg.cli import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_models_lists_architectures():
    result = _run("models")
    assert result.exit_code == 0
    for name in ("unet", "attention_unet", "hybrid", "unet3d"):
        assert name in result.output


def test_two_step_training_then_evaluate(phantom2d, tmp_path):
    ckpt = tmp_path / "m.ckpt"
    result = _run("train", "--data", phantom2d, "--out", ckpt, "--size", 32, "--epochs", 1, "--max-steps", 2,
                  "--batch-size", 2, "--arch-arg", "base=4", "--arch-arg", "depth=2", "--arch-arg", "embed_dim=16",
                  "--arch-arg", "num_heads=2")
    assert result.exit_code == 0, result.output
    spec = read_spec(ckpt)
    assert spec.arch == "hybrid" and spec.arch_kwargs["img_size"] == 32
    assert spec.training["history"] and spec.data["fingerprint"]
    assert set(spec.data["train_cases"]).isdisjoint(spec.data["val_cases"])
    assert "organ" in spec.metrics["val"]["mean"]
    out = tmp_path / "eval.json"
    result = _run("evaluate", ckpt, "--data", phantom2d, "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["split"] == "val" and set(data["cases"]) == set(spec.data["val_cases"])
    assert 0.0 <= data["mean"]["organ"]["dice"] <= 1.0


def test_2d_model_trains_on_volume_slices(phantom3d, tmp_path):
    ckpt = tmp_path / "m.ckpt"
    result = _run("train", "--data", phantom3d, "--out", ckpt, "--size", 32, "--epochs", 1, "--max-steps", 2,
                  "--batch-size", 4, "--arch", "unet", "--arch-arg", "base=4", "--arch-arg", "depth=2")
    assert result.exit_code == 0, result.output
    metrics = read_spec(ckpt).metrics["val"]
    assert "foreground" in metrics["mean"]  # scored per volume: the whole-structure union too


def test_3d_model_trains_on_volumes(phantom3d, tmp_path):
    ckpt = tmp_path / "m.ckpt"
    result = _run("train", "--data", phantom3d, "--out", ckpt, "--size", 16, "--epochs", 1, "--max-steps", 1,
                  "--batch-size", 2, "--arch", "unet3d", "--arch-arg", "base=4", "--arch-arg", "depth=2")
    assert result.exit_code == 0, result.output
    spec = read_spec(ckpt)
    assert spec.spatial_dims == 3 and spec.preprocessing.size == (16, 16, 16)
    assert "lesion" in spec.metrics["val"]["mean"]


def test_existing_output_needs_force(phantom2d, tmp_path):
    from edgeseg.demo import default_checkpoint

    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(default_checkpoint().read_bytes())  # an edgeseg checkpoint (any other file: never replaced)
    result = _run("train", "--data", phantom2d, "--out", ckpt)
    assert result.exit_code == 2 and "--force" in result.output


def test_user_errors_are_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgeseg.cli", "evaluate", str(tmp_path / "nope.ckpt"),
                           "--data", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error:")
    assert "Traceback" not in proc.stderr


def test_wrong_channel_data_is_refused(phantom3d):
    from edgeseg.demo import default_checkpoint

    result = _run("evaluate", default_checkpoint(), "--data", phantom3d)
    assert result.exit_code == 2 and "channels" in result.output


def test_demo_runs_the_bundled_checkpoint(tmp_path):
    result = _run("demo", "--workdir", tmp_path, "--no-compress")  # the compress path is tested in test_compress
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "evaluate.json").read_text())["mean"]
    assert scores["organ"]["dice"] > 0.9 and scores["lesion"]["dice"] > 0.8


def test_phantom_command_refuses_existing_dataset(phantom2d):
    result = _run("data", "phantom", phantom2d)
    assert result.exit_code == 2 and "already holds" in result.output


@pytest.mark.parametrize("bad", ["base", "=3"])
def test_arch_arg_must_be_key_value(phantom2d, tmp_path, bad):
    result = _run("train", "--data", phantom2d, "--out", tmp_path / "m.ckpt", "--arch-arg", bad)
    assert result.exit_code == 64


TINY = ["--size", 32, "--epochs", 1, "--max-steps", 2, "--batch-size", 2, "--arch-arg", "base=4",
        "--arch-arg", "depth=2", "--arch-arg", "embed_dim=16", "--arch-arg", "num_heads=2"]


def test_progressive_resizing_trains_and_checks_its_size(phantom2d, tmp_path):
    result = _run("train", "--data", phantom2d, "--out", tmp_path / "m.ckpt", *TINY, "--progressive-size", 16)
    assert result.exit_code == 0, result.output
    assert read_spec(tmp_path / "m.ckpt").training["progressive_size"] == 16
    result = _run("train", "--data", phantom2d, "--out", tmp_path / "n.ckpt", *TINY, "--progressive-size", 10)
    assert result.exit_code == 64 and "divide by 2**depth" in result.output


def test_cuda_request_without_gpu_is_a_clear_error(phantom2d, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    result = _run("train", "--data", phantom2d, "--out", tmp_path / "m.ckpt", "--device", "cuda", *TINY)
    assert result.exit_code == 64 and "no CUDA GPU" in result.output


@pytest.mark.gpu
def test_training_on_gpu_gives_a_cpu_loadable_checkpoint(phantom2d, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU (none visible to PyTorch)")
    result = _run("train", "--data", phantom2d, "--out", tmp_path / "m.ckpt", "--device", "cuda", *TINY)
    assert result.exit_code == 0, result.output
    spec = read_spec(tmp_path / "m.ckpt")
    assert spec.training["device"] == torch.cuda.get_device_name()
    result = _run("evaluate", tmp_path / "m.ckpt", "--data", phantom2d)
    assert result.exit_code == 0, result.output
