"""Issue K: `bench --load` times every artifact again with one core kept busy (a real spinning process)."""
import json
import subprocess
import sys
import time

import psutil
import pytest
from typer.testing import CliRunner

from edgeseg.benchmark.load import background_load, parse_loads
from edgeseg.cli import app
from edgeseg.errors import EdgesegError


def test_load_shares_parse_and_hostile_ones_get_one_line():
    assert parse_loads("0.3,0.6") == (0.3, 0.6) and parse_loads("30%") == (0.3,) and parse_loads(None) == ()
    for bad in ("0", "1.5", "abc", "0.1,0.1", "0.1,0.2,0.3,0.4,0.5", "-0.3", "nan"):
        with pytest.raises(EdgesegError, match="--load"):
            parse_loads(bad)


def test_the_background_load_spins_and_is_always_stopped():
    with background_load(0.5) as proc:
        p = psutil.Process(proc.pid)
        p.cpu_percent(None)
        time.sleep(0.5)
        busy = p.cpu_percent(None)
    # about half of one core; well under it when every core is oversubscribed (measured 22 % with 5 busy
    # processes on 2 cores), never near 0 while it spins
    assert 10 <= busy <= 80, busy
    assert proc.poll() is not None
    with pytest.raises(RuntimeError):
        with background_load(0.2) as proc:
            raise RuntimeError("bench failed")
    assert proc.poll() is not None  # killed on the way out of a failure too


def test_bench_load_reports_p50_p99_against_idle_and_says_how_the_pick_held_up(bundle, phantom_demo, tmp_path):
    out = tmp_path / "load.json"
    res = CliRunner().invoke(app, ["bench", str(bundle), "--data", str(phantom_demo), "--cases", "2", "--repeats", "8",
                                   "--rounds", "2", "--warmup", "1", "--batch-size", "0", "--e2e-cases", "0",
                                   "--backends", "onnxruntime", "--threads", "1", "--load", "0.5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["settings"]["load"] == [0.5]
    timed = [a for a in result["artifacts"] if a.get("latency")]
    assert timed and all(set(a["under_load"]) == {"50%"} for a in timed)
    for a in timed:
        row = a["under_load"]["50%"]
        assert row["p99_ms"] >= row["p50_ms"] > 0
        assert row["p99_vs_idle_p50"] == pytest.approx(row["p99_ms"] / a["latency"]["batch_1"]["p50_ms"])
    assert any("under 50% load on one core" in line for line in result["verdict"]["lines"])
    assert "## Under load" in out.with_suffix(".md").read_text()
    assert "latency under load" in res.output


def test_a_bench_killed_under_load_leaves_no_spinning_process(bundle, phantom_demo, tmp_path):
    """The load process dies with its bench, even when the bench is killed outright (it checks its parent)."""
    proc = subprocess.Popen([sys.executable, "-m", "edgeseg", "bench", str(bundle), "--data", str(phantom_demo),
                             "--cases", "1", "--repeats", "8", "--rounds", "1", "--batch-size", "0", "--e2e-cases",
                             "0", "--backends", "onnxruntime", "--load", "0.3", "--out", str(tmp_path / "b.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    spinner = None
    while time.time() < deadline and spinner is None and proc.poll() is None:
        spinner = next((c for c in psutil.Process(proc.pid).children(recursive=True) if _is_load(c)), None)
        time.sleep(0.2)
    assert spinner is not None, "the load never started"
    proc.kill()
    proc.wait()
    deadline = time.time() + 5
    while time.time() < deadline and not _gone(spinner):
        time.sleep(0.1)
    assert _gone(spinner), "the load process outlived a killed bench"


def _is_load(process) -> bool:
    try:
        return "edgeseg.benchmark.load" in " ".join(process.cmdline())
    except psutil.Error:  # a worker that just exited
        return False


def _gone(process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # exited, not yet reaped by whoever adopted it
    except psutil.NoSuchProcess:
        return True
