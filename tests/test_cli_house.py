"""The CLI house (issue I): global options, logging, --json, the error → exit-code table, the flag clean-ups."""
import json
import logging
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from edgeseg import __version__
from edgeseg.cli import app
from edgeseg.cli.app import EXIT_CODES, exit_code
from edgeseg.demo import default_checkpoint
from edgeseg.errors import EdgesegError, Incomplete, InputError, LimitBroken, UsageError, VerificationError

WIDE = {"COLUMNS": "250"}  # option names and choices never cut in --help


@pytest.fixture(autouse=True)
def _edgeseg_logger_restored():
    """-q/-v set the level of the process-wide ``edgeseg`` logger: leave it as found for the other tests."""
    logger = logging.getLogger("edgeseg")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


def _run(*args, **kwargs):
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def _commands():
    """Every command as its argv prefix: ``["bench"]``, …, ``["data", "phantom"]``."""
    import typer

    commands = [[c.name] for c in app.registered_commands]
    for group in app.registered_groups:
        commands += [[group.name, c.name] for c in typer.main.get_group(app).commands[group.name].commands.values()]
    return commands


def test_version():
    result = _run("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"edgeseg {__version__}"
    proc = subprocess.run([sys.executable, "-m", "edgeseg", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"edgeseg {__version__}"


def test_quiet_and_verbose_set_the_edgeseg_logger(monkeypatch):
    import edgeseg.models

    def noisy():
        log = logging.getLogger("edgeseg.models.registry")
        log.debug("debug-line")
        log.info("info-line")
        log.warning("warning-line")
        return {"unet": "a U-Net"}

    monkeypatch.setattr(edgeseg.models, "list_models", noisy)
    default, quiet, verbose = _run("models"), _run("-q", "models"), _run("--verbose", "models")
    for result in (default, quiet, verbose):
        assert result.exit_code == 0, result.output
        assert "warning: warning-line" in result.stderr and "unet" in result.stdout  # warnings and results: always
        assert "line" not in result.stdout  # logs never go to stdout
    assert "info-line" in default.stderr and "debug-line" not in default.stderr
    assert "info-line" not in quiet.stderr
    assert "info-line" in verbose.stderr and "debug-line" in verbose.stderr
    both = _run("-q", "-v", "models")
    assert both.exit_code == 64 and both.stderr.strip().startswith("error:")


def test_quiet_silences_the_training_log(phantom2d, tmp_path):
    tiny = ["--size", 32, "--epochs", 1, "--max-steps", 2, "--batch-size", 2, "--arch", "unet", "--arch-arg", "base=4",
            "--arch-arg", "depth=2"]
    loud = _run("train", "--data", phantom2d, "--out", tmp_path / "a.ckpt", *tiny)
    quiet = _run("-q", "train", "--data", phantom2d, "--out", tmp_path / "b.ckpt", *tiny)
    assert loud.exit_code == 0 and quiet.exit_code == 0, loud.output + quiet.output
    assert "val samples on" in loud.stderr and "epoch   1" in loud.stderr
    assert "val samples on" not in quiet.output and "epoch   1" not in quiet.output
    assert "stopped:" in quiet.stdout  # the result still prints


@pytest.mark.parametrize("command", ["models", "profiles"])
def test_json_of_listings_is_json_and_only_json(command):
    result = _run(command, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and rows and all(isinstance(r, dict) and r.get("name") for r in rows)
    plain = _run(command).stdout.splitlines()
    assert len(plain) == len(rows) and all(row["name"] in line for row, line in zip(rows, plain))


def test_usage_error_exits_64_with_one_line(tmp_path):
    result = _run("calibrate", "--checkpoint", default_checkpoint(), "--out", tmp_path / "c.npz")
    assert result.exit_code == 64 and result.stdout == ""
    assert result.stderr.strip() == "error: pass a dataset folder or --recipe NAME"
    assert not (tmp_path / "c.npz").exists()


def test_one_exit_code_table():
    assert exit_code(LimitBroken) == 1 and exit_code(VerificationError) == 3 and exit_code(Incomplete) == 4
    assert exit_code(InputError) == exit_code(EdgesegError) == 2 and exit_code(UsageError("x")) == 64  # apart
    assert all(issubclass(cls, EdgesegError) for cls in EXIT_CODES)
    assert len({UsageError, InputError, VerificationError, LimitBroken, Incomplete}) == 5  # four kinds, apart


def _tampered(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    model = copy / "x86-onnxruntime-int8.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, the manifest untouched
    model.write_bytes(bytes(data))
    return copy


def test_a_tampered_bundle_exits_3(bundle, phantom_demo, tmp_path):
    copy = _tampered(bundle, tmp_path)
    image = sorted((phantom_demo / "imagesTr").glob("*.png"))[0]
    result = _run("infer", copy, image, "-o", tmp_path / "masks", "--backend", "onnxruntime")
    assert result.exit_code == 3, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "sha256 mismatch" in errors[0] and "Traceback" not in result.output
    assert not (tmp_path / "masks").exists()
    assert _run("prepare-engine", copy, "--cache", tmp_path / "cache").exit_code == 3
    # verify: 3 when listed files fail or the manifest's digest does not match
    listed = _run("verify", copy, "--json")
    assert listed.exit_code == 3 and "FAIL x86-onnxruntime-int8.onnx" in listed.stderr
    report = json.loads(listed.stdout)
    assert report["ok"] is False and any("sha256 mismatch" in p for p in report["problems"])
    assert _run("verify", bundle, "--expect-digest", "0" * 64).exit_code == 3


def test_verify_json_of_an_intact_bundle(bundle):
    result = _run("verify", bundle, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["problems"] == [] and len(report["manifest_sha256"]) == 64


def test_help_has_single_flags_and_no_double_negatives():
    commands = _commands()
    assert ["data", "phantom"] in commands and len(commands) >= 18
    for argv in commands:
        result = _run(*argv, "--help", env=WIDE)
        assert result.exit_code == 0, (argv, result.output)
        assert "--no-no" not in result.output and "--no-force" not in result.output, argv
    assert "--force" in _run("train", "--help", env=WIDE).output
    bench = _run("bench", "--help", env=WIDE).output
    assert "--no-latency" in bench and "--no-compare-baselines" not in bench
    compress = _run("compress", "--help", env=WIDE).output
    assert "--no-calib-from-checkpoint" not in compress and "--no-allow-miss" not in compress


def test_choices_are_listed_in_help_and_checked():
    assert "train|val|all|test" in _run("evaluate", "--help", env=WIDE).output
    assert "auto|workload|reference|absolute|runtime_fp32" in _run("gate", "--help", env=WIDE).output
    assert "stratified|random" in _run("calibrate", "--help", env=WIDE).output
    result = _run("evaluate", default_checkpoint(), "--data", ".", "--split", "validation")
    assert result.exit_code == 64 and "--split" in result.output


def test_choices_are_the_library_s():
    from edgeseg.calibration import STRATEGIES
    from edgeseg.cli.app import GateMode, Normalization, Resize, SensitivityMode, Strategy
    from edgeseg.data.preprocessing import FLAG_NORMALIZATIONS, FLAG_RESIZE_MODES
    from edgeseg.gating.baseline import MODES
    from edgeseg.tuning.sensitivity import MODES as SENSITIVITY_MODES

    for enum, values in ((Normalization, FLAG_NORMALIZATIONS), (Resize, FLAG_RESIZE_MODES), (Strategy, STRATEGIES),
                         (GateMode, ("auto", *MODES)), (SensitivityMode, SENSITIVITY_MODES)):
        assert {e.value for e in enum} == set(values), enum


def test_python_m_edgeseg_cli_still_runs():
    proc = subprocess.run([sys.executable, "-m", "edgeseg.cli", "models", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert any(row["name"] == "hybrid" for row in json.loads(proc.stdout))


def test_choice_enums_mirror_the_library_constants():
    from edgeseg.calibration import STRATEGIES
    from edgeseg.data.preprocessing import FLAG_NORMALIZATIONS, FLAG_RESIZE_MODES
    from edgeseg.gating.baseline import MODES
    from edgeseg.targets.onnxruntime_backend import CALIBRATION_METHODS
    from edgeseg.targets.profiles import PRECISIONS
    from edgeseg.tuning.sensitivity import MODES as SENSITIVITY_MODES

    mod = sys.modules["edgeseg.cli.app"]
    for enum_type, constant in ((mod.Strategy, STRATEGIES), (mod.Normalization, FLAG_NORMALIZATIONS),
                                (mod.Resize, FLAG_RESIZE_MODES), (mod.CalibMethod, CALIBRATION_METHODS),
                                (mod.Precision, PRECISIONS), (mod.GateMode, ("auto", *MODES)),
                                (mod.SensitivityMode, SENSITIVITY_MODES)):
        assert {m.value for m in enum_type} == set(constant), enum_type


def test_nncf_and_openvino_telemetry_stay_off_unless_allowed(tmp_path):
    """Their telemetry forks a sender joined at exit; without internet it hung `edgeseg compress` at exit. A fresh
    interpreter (NNCF turns its telemetry off by itself inside pytest) sees both libraries' no-op stubs."""
    import os

    code = ("import edgeseg, nncf\nfrom nncf.telemetry.wrapper import telemetry\n"
            "import openvino.tools.ovc.convert_impl as ovc\nprint(type(telemetry).__name__, ovc.tm.__name__)")
    env = {k: v for k, v in os.environ.items() if k not in ("EDGESEG_ALLOW_TELEMETRY", "NNCF_CI", "CI")}
    env["HOME"] = str(tmp_path)  # an allowed telemetry writes its client id under HOME
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert off.returncode == 0, off.stderr
    assert off.stdout.split() == ["MagicMock", "openvino.tools.ovc.telemetry_stub"]  # NNCF's stub is a MagicMock
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                        env={**env, "EDGESEG_ALLOW_TELEMETRY": "1"})
    assert on.returncode == 0 and on.stdout.split() == ["NNCFTelemetry", "openvino_telemetry"], on.stderr
