"""An FP32 ONNX model as compress's input (issue J): no torch module — no pruning, ONNX Runtime FP32 as the
reference — with its spec from its own metadata or from a spec file; it needs no torch at all."""
from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
from typer.testing import CliRunner

import edgeseg
from edgeseg.cli import app
from edgeseg.errors import EdgesegError

SPEC = """labels = ["background", "organ", "lesion"]
[preprocessing]
size = [128, 128]
channel_names = ["phantom0"]
normalization = "zscore"
"""


@pytest.fixture
def bare_onnx(bundle, tmp_path):
    """The phantom model's FP32 ONNX with its edgeseg metadata stripped (as an ONNX file from elsewhere)."""
    model = onnx.load(str(bundle / "x86-onnxruntime-fp32.onnx"))
    del model.metadata_props[:]
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path


def test_an_onnx_model_with_edgeseg_metadata_compresses_against_onnx_runtime_fp32(bundle, phantom_demo, tmp_path):
    import shutil

    source = tmp_path / "phantom.onnx"
    shutil.copyfile(bundle / "x86-onnxruntime-fp32.onnx", source)
    out = edgeseg.compress(source, calibration=phantom_demo, targets=["onnxruntime", "openvino"],
                           eval_data=phantom_demo, out=tmp_path / "b", calib_size=8, eval_cases=3, latency_repeats=3,
                           threads=1)
    artifacts = {a["name"]: a for a in out.manifest["artifacts"]}
    assert "torch-fp32" not in artifacts and out.manifest["model"]["arch"] == "onnx"
    reference = artifacts["x86-onnxruntime-fp32"]
    assert reference["accuracy"]["drift_vs_fp32"]["organ"] == 0.0  # the reference itself
    int8 = artifacts["x86-onnxruntime-int8"]
    assert int8["accuracy"]["cases"] == 3 and int8["latency"]["p50_ms"] > 0
    assert abs(int8["accuracy"]["drift_vs_fp32"]["organ"]) < 0.02
    assert out.manifest["params"]["original"] > 0 and out.manifest["macs"]["original"] is None
    result = edgeseg.bench(out, phantom_demo, max_cases=2, latency=False)
    assert result.data["reference"] == "x86-onnxruntime-fp32"
    assert out.predictor().predict(__import__("numpy").zeros((128, 128), "uint8")).shape == (128, 128)


def test_an_onnx_model_without_metadata_needs_a_spec_file(bare_onnx, phantom_demo, tmp_path):
    runner = CliRunner()
    args = ["compress", str(bare_onnx), "--out", str(tmp_path / "b"), "--int8", "--targets", "onnx",
            "--calib", str(phantom_demo), "--eval-data", str(phantom_demo), "--eval-cases", "2",
            "--latency-repeats", "3"]
    missing = runner.invoke(app, args)
    assert missing.exit_code == 2 and "pass --spec FILE" in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    (tmp_path / "spec.toml").write_text(SPEC)
    done = runner.invoke(app, [*args, "--spec", str(tmp_path / "spec.toml")])
    assert done.exit_code == 0, done.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["labels"] == ["background", "organ", "lesion"]
    int8 = onnx.load(str(tmp_path / "b" / "x86-onnxruntime-int8.onnx"))  # the spec travels inside every artifact
    assert json.loads({p.key: p.value for p in int8.metadata_props}["edgeseg.label_names"])[2] == "lesion"


@pytest.mark.parametrize("spec, message", [
    (SPEC.replace('"lesion"]', '"lesion", "extra"]'), r"outputs \(1, 3, 128, 128\) for that input, expected \(1, 4"),
    (SPEC.replace('channel_names = ["phantom0"]', 'channel_names = ["a", "b"]'), "ONNX Runtime cannot run it"),
    (SPEC.replace("[128, 128]", "[128]"), "spatial_dims: .1. is not one of 2, 3"),
])
def test_a_spec_that_does_not_fit_the_onnx_model_is_refused_in_one_line(bare_onnx, phantom_demo, tmp_path, spec,
                                                                        message):
    (tmp_path / "spec.toml").write_text(spec)
    with pytest.raises(EdgesegError, match=message) as err:
        edgeseg.compress(bare_onnx, calibration=phantom_demo, targets="onnxruntime", out=tmp_path / "b",
                         spec_file=tmp_path / "spec.toml")
    assert "\n" not in str(err.value) and not (tmp_path / "b").exists()


def test_pruning_an_onnx_model_is_refused_in_one_line(bundle, phantom_demo, tmp_path):
    result = CliRunner().invoke(app, ["compress", str(bundle / "x86-onnxruntime-fp32.onnx"), "--out",
                                      str(tmp_path / "b"), "--int8", "--calib", str(phantom_demo), "--prune", "0.3"])
    assert result.exit_code == 64 and "--prune needs an edgeseg model" in result.output


def test_the_onnx_path_runs_without_torch(bare_onnx, phantom_demo, tmp_path):
    """torch made unimportable: an ONNX model still compresses to ONNX Runtime and OpenVINO INT8."""
    (tmp_path / "spec.toml").write_text(SPEC)
    code = ("import sys\n"
            "class NoTorch:  # as if torch were not installed\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "import importlib.util\n"
            "real_find_spec = importlib.util.find_spec  # what libraries probe with (nncf): torch is absent\n"
            "importlib.util.find_spec = lambda name, package=None: (None if name.split('.')[0] == 'torch'\n"
            "                                                       else real_find_spec(name, package))\n"
            "import edgeseg\n"
            f"b = edgeseg.compress({str(bare_onnx)!r}, calibration={str(phantom_demo)!r}, spec_file="
            f"{str(tmp_path / 'spec.toml')!r}, targets=['onnxruntime', 'openvino'], eval_data={str(phantom_demo)!r}, "
            f"out={str(tmp_path / 'b')!r}, calib_size=8, eval_cases=2, latency_repeats=3, threads=1)\n"
            "assert 'torch' not in [a['runtime'] for a in b.manifest['artifacts']]\n"
            "assert 'torch' not in sys.modules\n"
            "print('ok', len(b.manifest['artifacts']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok 3")


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """The bundled phantom model as a TorchScript (traced) and an ExportedProgram file."""
    import torch

    from edgeseg.checkpoint import load_checkpoint
    from edgeseg.demo import default_checkpoint

    model, spec = load_checkpoint(default_checkpoint())
    folder = tmp_path_factory.mktemp("programs")
    example = torch.zeros(1, 1, *spec.preprocessing.size)
    torch.jit.save(torch.jit.trace(model.eval(), example), str(folder / "model.ts.pt"))
    torch.export.save(torch.export.export(model.eval(), (example,)), str(folder / "model.pt2"))
    (folder / "spec.toml").write_text(SPEC)
    return folder


@pytest.mark.parametrize("name, kind", [("model.ts.pt", "TorchScript"), ("model.pt2", "ExportedProgram")])
def test_a_torchscript_or_exported_program_compresses_only_when_trusted(programs, phantom_demo, tmp_path, name, kind):
    options = dict(calibration=phantom_demo, targets="onnxruntime", eval_data=phantom_demo, out=tmp_path / "b",
                   calib_size=8, eval_cases=2, latency_repeats=3, threads=1, spec_file=programs / "spec.toml")
    with pytest.raises(EdgesegError, match=f"a {kind} file runs code when it is loaded") as err:
        edgeseg.compress(programs / name, **options)
    assert "\n" not in str(err.value) and not (tmp_path / "b").exists()
    out = edgeseg.compress(programs / name, trust_code=True, **options)
    fp32 = next(a for a in out.manifest["artifacts"] if a["name"] == "x86-onnxruntime-fp32")
    assert fp32["parity_vs_torch"]["mask_agreement"] == 1.0 and fp32["parity_vs_torch"]["max_abs_diff"] < 1e-3
    assert out.manifest["source_checkpoint"]["name"] == name and out.manifest["model"]["arch"] == "onnx"
