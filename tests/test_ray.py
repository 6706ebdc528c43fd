"""Issue M: `infer --ray` (Ray Data, a local instance) gives the bytes local `infer` gives, resumes a killed run,
reports a bad input and goes on; `bench --ray` over two device classes declared on this machine."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.infer import InferConfig, run_infer
from edgeseg.infer.ledger import CASES_DIR, LEDGER_NAME

pytest.importorskip("ray.data", reason="the edgeseg[ray] extra is not installed")

CLASSES = ("fake-a", "fake-b")


@pytest.fixture(scope="module")
def ray_local():
    """A private local Ray instance, two CPUs, and the two device classes a fleet test asks for."""
    import ray

    from edgeseg.distributed.cluster import quiet_ray_data

    ray.init(num_cpus=2, resources={f"edgeseg-device:{c}": 1 for c in CLASSES}, include_dashboard=False,
             log_to_driver=False)
    quiet_ray_data(ray)
    yield ray
    ray.shutdown()


def _inputs(phantom_demo: Path, folder: Path, n: int, broken: bool = False) -> Path:
    folder.mkdir()
    for path in sorted((phantom_demo / "imagesTr").glob("*.png"))[:n]:
        shutil.copy(path, folder / path.name)
    if broken:
        (folder / "broken_0000.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return folder


def _masks(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def _ledger_files(folder: Path) -> list[str]:
    lines = (folder / LEDGER_NAME).read_text().splitlines()[1:]
    return [json.loads(line)["file"] for line in lines]


@pytest.mark.parametrize("end_to_end", [True, False], ids=["end-to-end-graph", "host-path-batched"])
def test_ray_infer_writes_the_bytes_local_infer_writes(ray_local, bundle, phantom_demo, tmp_path, end_to_end):
    inputs = _inputs(phantom_demo, tmp_path / "in", 10, broken=True)
    local = run_infer(InferConfig(bundle, [inputs], tmp_path / "local", threads=1, end_to_end=end_to_end))
    assert len(local["done"]) == 10
    for replicas in (1, 2):
        out = tmp_path / f"ray{replicas}"
        summary = run_infer(InferConfig(bundle, [inputs], out, threads=1, end_to_end=end_to_end, ray="auto",
                                        replicas=replicas))
        assert summary["artifact"] == local["artifact"]
        assert summary["done"] == local["done"]  # in input order, whichever replica did them
        assert [f["input"] for f in summary["failed"]] == [str((inputs / "broken_0000.png").absolute())]
        assert _masks(out) == _masks(tmp_path / "local")  # byte for byte
        assert sorted(_ledger_files(out)) == sorted(_masks(out))
        assert not (out / CASES_DIR).exists()  # every sidecar taken into the ledger
        ray_part = summary["ray"]
        assert 1 <= ray_part["replicas_seen"] <= replicas
        assert sum(r["cases"] for r in ray_part["per_replica"].values()) == 11  # the broken one too
        assert ray_part["images_per_second"] > 0


def test_resume_skips_complete_cases_and_redoes_unfinished_ones(bundle, phantom_demo, tmp_path):
    """The ledger's rules without Ray: a complete case is skipped, a case a kill left "writing" is done again
    (its file replaced only with --resume), a changed input or output is not taken as complete."""
    inputs = _inputs(phantom_demo, tmp_path / "in", 4)
    out = tmp_path / "out"
    first = run_infer(InferConfig(bundle, [inputs], out, threads=1))
    names = sorted(_masks(out))
    # a kill between writing a case's file and recording it: the sidecar says "writing", the ledger lacks it
    lines = (out / LEDGER_NAME).read_text().splitlines()
    (out / LEDGER_NAME).write_text("\n".join(line for line in lines if names[0] not in line) + "\n")
    (out / CASES_DIR).mkdir()
    sidecar = out / CASES_DIR / f"{first['done'][0]}.json"
    sidecar.write_text(json.dumps({"state": "writing", "files": [names[0]], "sealed": {}}))
    # a file the killed run did not seal (its bytes are not the ones it wrote): never taken as edgeseg's
    forged = run_infer(InferConfig(bundle, [inputs], out, threads=1, resume=True))
    assert "did not write" in forged["failed"][0]["error"] and not forged["done"]
    forced = run_infer(InferConfig(bundle, [inputs], out, threads=1, force=True))
    assert "did not write" in forced["failed"][0]["error"] and first["done"][0] not in forced["done"]
    # the run sealed the file's bytes, renamed it into place, then was killed
    sealed = {names[0]: hashlib.sha256((out / names[0]).read_bytes()).hexdigest()}
    sidecar.write_text(json.dumps({"state": "writing", "files": [names[0]], "sealed": sealed}))
    plain = run_infer(InferConfig(bundle, [inputs], out, threads=1))
    assert len(plain["failed"]) == 4 and "pass --resume" in plain["failed"][0]["error"]
    os.utime(inputs / sorted(os.listdir(inputs))[1], ns=(1, 1))  # an input changed since its outputs were written
    resumed = run_infer(InferConfig(bundle, [inputs], out, threads=1, resume=True))
    assert resumed["done"] == [first["done"][0]]
    assert resumed["skipped"] == [first["done"][2], first["done"][3]]
    assert "exists" in resumed["failed"][0]["error"] and len(resumed["failed"]) == 1  # changed input: not ours to redo
    assert sorted(set(_ledger_files(out))) == names and not (out / CASES_DIR).exists()


def test_records_a_killed_ray_driver_left_in_sidecars_are_taken_in_once_and_forged_ones_never(bundle, phantom_demo,
                                                                                                 tmp_path):
    inputs = _inputs(phantom_demo, tmp_path / "in", 3)
    out = tmp_path / "out"
    first = run_infer(InferConfig(bundle, [inputs], out, threads=1))
    lines = (out / LEDGER_NAME).read_text().splitlines()
    kept, records = lines[:1], {}
    for line in lines[1:]:
        record = json.loads(line)
        (records.setdefault(record["file"], []) if first["done"][2] not in record["file"] else kept).append(record)
    # case 0: a replica finished it, the driver was killed before its ledger append; case 1: after the append
    # (the sidecar is left as well); a forged sidecar claims a file edgeseg did not write
    (out / LEDGER_NAME).write_text("\n".join([lines[0], *(json.dumps(r) for r in kept[1:])]
                                             + [json.dumps(r) for r in records.get(f"{first['done'][1]}.png", [])])
                                   + "\n")
    (out / CASES_DIR).mkdir()
    for case in first["done"][:2]:
        sidecar = {"state": "done", "records": records[f"{case}.png"]}
        (out / CASES_DIR / f"{case}.json").write_text(json.dumps(sidecar))
    (out / "notes.txt").write_text("a user's file")
    forged = {"state": "done", "records": [{"file": "notes.txt", "sha256": "0" * 64}]}
    (out / CASES_DIR / "forged.json").write_text(json.dumps(forged))
    # a whole record of a user's file, in the sidecar of another case: its files all begin with that case's id
    (out / "scan_user.jpg").write_bytes(b"a user's mask")
    whole = {**records[f"{first['done'][0]}.png"][0], "file": "scan_user.jpg",
             "sha256": hashlib.sha256(b"a user's mask").hexdigest()}
    (out / CASES_DIR / "other.json").write_text(json.dumps({"state": "done", "records": [whole]}))
    resumed = run_infer(InferConfig(bundle, [inputs], out, threads=1, resume=True))
    assert resumed["skipped"] == first["done"] and not resumed["done"] and not resumed["failed"]
    files = _ledger_files(out)
    assert sorted(files) == sorted(_masks(out)), "a record taken in twice, lost, or forged"
    assert (out / "notes.txt").read_text() == "a user's file" and "scan_user.jpg" not in files


def _wait_for_lines(ledger: Path, n: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ledger.is_file() and len(ledger.read_text().splitlines()) > n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it was killed: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    pytest.fail("no output recorded in time")


@pytest.mark.slow
def test_a_ray_run_killed_midway_resumes_writing_each_missing_output_once(ray_local, bundle, phantom_demo, tmp_path):
    inputs = _inputs(phantom_demo, tmp_path / "in", 60)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "edgeseg", "infer", str(bundle), str(inputs), "-o", str(out), "--ray", "local",
           "--replicas", "2", "--threads-per-replica", "1", "--batch-size", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for_lines(out / LEDGER_NAME, 6, proc, timeout=240)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and what it started, mid-run
        proc.wait()
    time.sleep(1)
    before = set(_ledger_files(out))
    assert 6 <= len(before) < 60
    resumed = run_infer(InferConfig(bundle, [inputs], out, threads=1, ray="auto", replicas=2, resume=True))
    assert not resumed["failed"], resumed["failed"]
    assert len(resumed["skipped"]) + len(resumed["done"]) == 60 and len(resumed["skipped"]) >= len(before) - 2
    files = _ledger_files(out)
    assert sorted(files) == sorted(set(files)) == sorted(_masks(out)), "an output recorded twice or not at all"
    assert not [p for p in out.rglob("*") if ".edgeseg-" in p.name and p.name != CASES_DIR], "a partial file left"
    local = run_infer(InferConfig(bundle, [inputs], tmp_path / "local", threads=1))
    assert _masks(out) == _masks(tmp_path / "local")
    assert len(local["done"]) == 60


def test_ray_options_without_ray_and_a_missing_extra_are_one_line_errors(bundle, phantom_demo, tmp_path, monkeypatch):
    inputs = _inputs(phantom_demo, tmp_path / "in", 1)
    result = CliRunner().invoke(app, ["infer", str(bundle), str(inputs), "-o", str(tmp_path / "o"), "--replicas", "2"])
    assert result.exit_code == 64 and "need --ray" in result.output
    monkeypatch.setitem(sys.modules, "ray", None)  # as if edgeseg[ray] were not installed
    result = CliRunner().invoke(app, ["infer", str(bundle), str(inputs), "-o", str(tmp_path / "o"), "--ray", "auto"])
    assert result.exit_code == 64 and "pip install 'edgeseg[ray]'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_bench_ray_benches_each_device_class_on_its_node_and_gates_them(ray_local, bundle, phantom_demo, tmp_path):
    out, baselines = tmp_path / "fleet", tmp_path / "baselines"
    bench = ["bench", str(bundle), "--data", str(phantom_demo), "--cases", "2", "--backends", "onnxruntime",
             "--repeats", "6", "--rounds", "6", "--warmup", "1", "--batch-size", "0", "--e2e-cases", "0",
             "--threads", "1", "--ray", "auto", "--device-classes", ",".join(CLASSES), "--out", str(out)]
    result = CliRunner().invoke(app, bench)
    assert result.exit_code == 0, result.output
    results = [out / f"{c}.json" for c in CLASSES]
    assert all(p.is_file() and p.with_suffix(".md").is_file() for p in results)
    assert [json.loads(p.read_text())["device"]["fleet"]["device_class"] for p in results] == list(CLASSES)
    gate = ["gate", *map(str, results), "--baseline-dir", str(baselines)]
    assert CliRunner().invoke(app, [*gate, "--update-baseline"]).exit_code == 0
    assert sorted(p.name for p in baselines.iterdir()) == [f"{c}.json" for c in CLASSES]
    junit = tmp_path / "fleet.xml"
    result = CliRunner().invoke(app, [*gate, "--junit", str(junit), "--no-confirm"])
    assert result.exit_code == 0, result.output
    suites = [s for s in junit.read_text().split("<testsuite ")[1:]]
    assert [s.split('name="')[1].split('"')[0] for s in suites] == list(CLASSES)


def test_bench_ray_refuses_a_class_no_node_advertises(ray_local, bundle, phantom_demo, tmp_path):
    result = CliRunner().invoke(app, ["bench", str(bundle), "--data", str(phantom_demo), "--ray", "auto",
                                      "--device-classes", "jetson-orin-nano", "--out", str(tmp_path / "fleet")])
    assert result.exit_code == 2 and "edgeseg-device:jetson-orin-nano" in result.output
    assert not (tmp_path / "fleet").exists()
