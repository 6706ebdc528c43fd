"""Installs as users make them: target profiles and calibration recipes ship inside the package (never read
from the checkout), the wheel works outside the checkout, and on Python 3.10 (tomli instead of tomllib)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_TREE = ("pyproject.toml", "README.md", "edgeseg", "export", "calibration")
SHIPPED = {"export": "_profiles", "calibration": "_recipes"}  # top-level folder -> package-data folder
CLI = "import sys; from edgeseg.cli import main; sys.argv[0] = 'edgeseg'; main()"


def python310() -> str | None:
    """A Python 3.10 interpreter: pyenv's 3.10.13, any pyenv 3.10, else ``python3.10`` on PATH."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [pyenv_root / "versions/3.10.13/bin/python3", *sorted(pyenv_root.glob("versions/3.10.*/bin/python3"))]
    found = next((str(c) for c in candidates if c.is_file()), None)
    return found or shutil.which("python3.10")


def copy_source(dst: Path) -> Path:
    """What an sdist holds, copied without caches (the build never touches the shared checkout)."""
    dst.mkdir(parents=True)
    for name in SOURCE_TREE:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dst / name)
    return dst


def run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGESEG_PROFILES", "PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def package_layout(tmp_path_factory) -> Path:
    """edgeseg laid out as the wheel holds it: setuptools' build_py on a copy of the source tree."""
    tmp = tmp_path_factory.mktemp("layout")
    src = copy_source(tmp / "src")
    build = "import sys, setuptools; lib = sys.argv.pop(); sys.argv[1:] = ['-q', 'build_py', '--build-lib', lib]; setuptools.setup()"
    done = run([sys.executable, "-c", build, str(tmp / "lib")], cwd=src)
    assert done.returncode == 0, done.stderr
    return tmp / "lib"


@pytest.fixture()
def outside(tmp_path) -> Path:
    """A working directory outside the checkout, without export/ or calibration/ folders."""
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def test_every_module_and_shipped_file_is_packaged(package_layout):
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "edgeseg").rglob("*.py") if "__pycache__" not in p.parts}
    packaged = {p.relative_to(package_layout).as_posix() for p in (package_layout / "edgeseg").rglob("*.py")}
    assert sources - packaged == set(), "add the new package to [tool.setuptools] packages in pyproject.toml"
    for folder, shipped in SHIPPED.items():
        tomls = sorted(p.name for p in (ROOT / folder).glob("*.toml"))
        assert tomls and sorted(p.name for p in (package_layout / "edgeseg" / shipped).glob("*.toml")) == tomls


def test_profiles_and_recipes_resolve_from_the_package_outside_the_checkout(package_layout, outside):
    code = ("import json; from edgeseg.targets import list_profiles; from edgeseg.calibration import load_recipe\n"
            "from edgeseg.package_data import shipped_folder\n"
            "print(json.dumps({'profiles': {k: str(v) for k, v in list_profiles().items()},\n"
            "                  'recipes': str(shipped_folder('calibration')), 'size': load_recipe('phantom')['size']}))")
    done = run([sys.executable, "-c", code], cwd=outside, env=clean_env(PYTHONPATH=str(package_layout)))
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert "x86-onnxruntime-int8" in found["profiles"] and found["size"] == 32
    assert all(Path(p).is_relative_to(package_layout) for p in found["profiles"].values())
    assert Path(found["recipes"]).is_relative_to(package_layout)

    # user files in ./export and ./calibration come first (by name), then the shipped ones
    (outside / "export").mkdir()
    (outside / "export" / "x86-onnxruntime-int8.toml").write_text('target = "onnxruntime"\nprecision = "int8"\n')
    (outside / "calibration").mkdir()
    (outside / "calibration" / "phantom.toml").write_text('dataset = "mine"\nsize = 4\n')
    done = run([sys.executable, "-c", code], cwd=outside, env=clean_env(PYTHONPATH=str(package_layout)))
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert Path(found["profiles"]["x86-onnxruntime-int8"]).parent == outside / "export"
    assert Path(found["profiles"]["torch-fp32"]).is_relative_to(package_layout) and found["size"] == 4


def test_profiles_command_lists_the_shipped_profiles(package_layout, outside):
    done = run([sys.executable, "-c", CLI, "profiles"], cwd=outside, env=clean_env(PYTHONPATH=str(package_layout)))
    assert done.returncode == 0, done.stderr
    assert "x86-onnxruntime-int8" in done.stdout and "jetson-orin-tensorrt-int8" in done.stdout


def test_profiles_command_without_any_profile_fails_with_one_line(package_layout, tmp_path, outside):
    broken = tmp_path / "lib"  # an install that lost its profiles
    shutil.copytree(package_layout, broken, ignore=shutil.ignore_patterns(SHIPPED["export"]))
    done = run([sys.executable, "-c", CLI, "profiles"], cwd=outside, env=clean_env(PYTHONPATH=str(broken)))
    assert done.returncode != 0
    assert done.stderr.strip().startswith("error: no target profiles found") and len(done.stderr.strip().splitlines()) == 1


def test_jetson_image_copies_every_folder_the_package_is_built_from():
    import tomllib

    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    needed = {"pyproject.toml", "README.md", "edgeseg", *setuptools_cfg.get("package-dir", {}).values()}
    copies = [line.split()[1:-1] for line in (ROOT / "Dockerfile.jetson").read_text().splitlines() if line.startswith("COPY ")]
    assert needed <= {src.rstrip("/") for sources in copies for src in sources}


def test_sources_compile_on_python_310():
    py310 = python310()
    if py310 is None:
        pytest.skip("no Python 3.10 interpreter (pyenv versions/3.10.* or python3.10 on PATH)")
    check = ("import pathlib, sys\n"
             "for p in sorted(pathlib.Path(sys.argv[1]).rglob('*.py')):\n"
             "    compile(p.read_text(encoding='utf-8'), str(p), 'exec', dont_inherit=True)")
    done = run([py310, "-c", check, str(ROOT / "edgeseg")], cwd=ROOT)
    assert done.returncode == 0, done.stderr


# --- slow: a real wheel in fresh virtual environments -----------------------------------------------------------

@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built without build isolation from a copy of the source tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = copy_source(tmp / "src")
    done = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
                str(src)], cwd=tmp)
    assert done.returncode == 0, done.stderr
    return next((tmp / "dist").glob("edgeseg-*.whl"))


def venv_site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python3.*/site-packages"))


@pytest.mark.slow
def test_wheel_installed_outside_the_checkout_ships_profiles_and_recipes(wheel, tmp_path, outside):
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path).returncode == 0
    # the dependencies come from this environment's site-packages (a plain path: its editable-install hook
    # is not run, so `import edgeseg` can only find the installed wheel)
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (venv_site_packages(venv) / "dev_deps.pth").write_text("\n".join(deps) + "\n")
    done = run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "--no-deps", "-q", str(wheel)],
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    done = run([str(venv / "bin/edgeseg"), "profiles"], cwd=outside, env=clean_env())
    assert done.returncode == 0, done.stderr
    assert "x86-onnxruntime-int8" in done.stdout
    code = ("import edgeseg; from edgeseg.calibration import load_recipe; "
            "print(edgeseg.__file__); print(load_recipe('phantom')['size'])")
    done = run([str(venv / "bin/python"), "-c", code], cwd=outside, env=clean_env())
    assert done.returncode == 0, done.stderr
    location, size = done.stdout.split()
    assert Path(location).is_relative_to(venv) and size == "32"


@pytest.mark.slow
def test_wheel_on_python_310_reads_profiles_recipes_and_gate_limits(wheel, tmp_path, outside):
    py310 = python310()
    if py310 is None:
        pytest.skip("no Python 3.10 interpreter (pyenv versions/3.10.* or python3.10 on PATH)")
    venv = tmp_path / "venv310"
    assert run([py310, "-m", "venv", str(venv)], cwd=tmp_path).returncode == 0
    done = run([str(venv / "bin/python"), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path)  # base install
    assert done.returncode == 0, done.stderr

    (outside / "limits.toml").write_text('max_latency_regression = "10%"\nmax_dice_drop = 0.5\n')
    code = "from pathlib import Path; from edgeseg.gating.check import load_limits_file; print(load_limits_file(Path('limits.toml')))"
    done = run([str(venv / "bin/python"), "-c", code], cwd=outside, env=clean_env())
    assert done.returncode == 0, done.stderr  # gate --limits: TOML without tomllib
    assert "'max_dice_drop': 0.5" in done.stdout

    done = run([str(venv / "bin/edgeseg"), "profiles"], cwd=outside, env=clean_env())
    assert done.returncode == 0, done.stderr
    assert "x86-avx512-openvino-int8" in done.stdout
    code = "from edgeseg.calibration import load_recipe; print(load_recipe('chest_xray')['strategy'])"
    done = run([str(venv / "bin/python"), "-c", code], cwd=outside, env=clean_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stratified"


def test_ci_runs_the_readme_tests_and_the_user_installs():
    """What CI must do (issue G, item 18), kept from drifting: .ci/run takes its test command from README.md's
    ci:test block and runs the install check, which builds the wheel from the sdist, runs `edgeseg demo` from it
    on Python 3.11 with [full] outside the checkout, and `verify` + `infer` on Python 3.10 with [runtime], failing
    when that install pulls torch or infer writes fewer masks than images. (The runs themselves are the CI log.)"""
    ci = (ROOT / ".ci/run").read_text()
    check = (ROOT / ".ci/install_check.sh").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "<!-- ci:test -->" in readme and "sed -n '/<!-- ci:test -->/" in ci
    assert "bash .ci/install_check.sh" in ci and "benchmarks/suites/ci_gate.sh" in ci
    for needle in ("-m build -q --outdir", "[full]", "$py311/bin/edgeseg' demo", "[runtime]",
                   "import torch", "$py310/bin/edgeseg' verify", "$py310/bin/edgeseg' infer", '"$masks" -eq "$images"'):
        assert needle in check, needle
