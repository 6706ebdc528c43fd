"""No flag ever overwrites a file edgeseg did not write (issue G): every command that writes a result file
refuses a foreign file at that path whatever the flags, and replaces an earlier edgeseg output only with
--force."""
import json

import pytest
from typer.testing import CliRunner

from edgeseg.cli import app
from edgeseg.demo import default_checkpoint
from edgeseg.overwrite import written_by_edgeseg


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _refused(result, text):
    assert result.exit_code == 2, result.output
    assert text in result.output and "Traceback" not in result.output


@pytest.fixture
def foreign(tmp_path):
    """write(name) → a user's file of that name, whose bytes the test checks are untouched."""
    def write(name, data=b"my own notes\n"):
        path = tmp_path / name
        path.write_bytes(data)
        return path
    return write


def test_evaluate_json_replaces_only_its_own_result(phantom_demo, foreign):
    path = foreign("val.json", b'{"mine": true}')
    for extra in ((), ("--force",)):
        _refused(_run("evaluate", default_checkpoint(), "--data", phantom_demo, "--out", path, *extra),
                 "not written by edgeseg")
    assert path.read_bytes() == b'{"mine": true}'
    ours = path.with_name("ours.json")
    assert _run("evaluate", default_checkpoint(), "--data", phantom_demo, "--out", ours).exit_code == 0
    assert written_by_edgeseg(ours) and json.loads(ours.read_text())["schema"] == "edgeseg-evaluation"
    _refused(_run("evaluate", default_checkpoint(), "--data", phantom_demo, "--out", ours), "pass --force")
    assert _run("evaluate", default_checkpoint(), "--data", phantom_demo, "--out", ours, "--force").exit_code == 0


@pytest.mark.parametrize("command", ["calibrate", "prune", "train", "import-weights", "sensitivity"])
def test_commands_never_replace_a_foreign_file(phantom_demo, foreign, command):
    ckpt = default_checkpoint()
    target = {"calibrate": "c.npz", "prune": "p.ckpt", "train": "t.ckpt", "import-weights": "w.ckpt",
              "sensitivity": "s.json"}[command]
    path = foreign(target)
    args = {"calibrate": (phantom_demo, "--checkpoint", ckpt, "--out", path),
            "prune": (ckpt, "--data", phantom_demo, "--ratio", 0.5, "--out", path),
            "train": ("--data", phantom_demo, "--epochs", 1, "--out", path),
            "import-weights": (ckpt, "--arch", "hybrid", "--in-channels", 1, "--labels", "bg,a,b", "--out", path),
            "sensitivity": (ckpt, "--calib", phantom_demo, "--data", phantom_demo, "--out", path)}[command]
    _refused(_run(command, *args, "--force"), "not written by edgeseg")
    assert path.read_bytes() == b"my own notes\n"


def test_sensitivity_plot_beside_the_json_is_checked_too(phantom_demo, foreign):
    plot = foreign("s.png", b"\x89PNG not ours")
    _refused(_run("sensitivity", default_checkpoint(), "--calib", phantom_demo, "--data", phantom_demo,
                  "--out", plot.with_suffix(".json"), "--force"), "s.png")
    assert plot.read_bytes() == b"\x89PNG not ours"


def test_phantom_and_demo_leave_foreign_files_alone(tmp_path, foreign):
    foreign("notes.txt")
    _refused(_run("data", "phantom", tmp_path, "--cases", 4), "not an empty folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    work = tmp_path / "demo"
    work.mkdir()
    (work / "evaluate.json").write_text("{}")
    _refused(_run("demo", "--workdir", work, "--no-compress"), "not written by edgeseg")
    assert (work / "evaluate.json").read_text() == "{}"


def test_recognisers_go_by_content_not_by_name(tmp_path, bundle):
    assert written_by_edgeseg(default_checkpoint())
    assert not written_by_edgeseg(tmp_path / "missing.json")
    fake = tmp_path / "x.ckpt"
    fake.write_bytes(b"\x00" * 64)
    assert not written_by_edgeseg(fake)
    link = tmp_path / "link.json"
    link.symlink_to(bundle / "manifest.json")
    assert written_by_edgeseg(bundle / "manifest.json") and not written_by_edgeseg(link)


def test_bench_and_gate_outputs_replace_only_their_own(bundle, phantom_demo, foreign):
    for name in ("r.json", "r.md", "r.png"):
        path = foreign(name)
        _refused(_run("bench", bundle, "--data", phantom_demo, "--no-latency", "--out", path.with_suffix(".json"),
                      "--force"), "not written by edgeseg")
        assert path.read_bytes() == b"my own notes\n"
        path.unlink()
    junit = foreign("report.xml", b"<testsuites name='mine'/>")
    _refused(_run("gate", junit.with_name("r.json"), "--baseline", junit.with_name("b.json"), "--junit", junit),
             "not an edgeseg JUnit report")
    assert junit.read_bytes() == b"<testsuites name='mine'/>"
    # edgeseg wrote it, but not as a JUnit report: a checkpoint or a bundle's manifest is never replaced by one
    model = foreign("model.ckpt", default_checkpoint().read_bytes())
    for path in (model, bundle / "manifest.json"):
        before = path.read_bytes()
        _refused(_run("gate", junit.with_name("r.json"), "--baseline", junit.with_name("b.json"), "--junit", path),
                 "not an edgeseg JUnit report")
        assert path.read_bytes() == before


def test_a_file_that_only_mentions_edgeseg_is_not_taken_for_its_output(tmp_path):
    """Markdown and JUnit are recognised by what edgeseg writes, not by the word: a lab notebook about edgeseg,
    a pytest JUnit whose test is named after it, a JUnit with an entity are a user's."""
    from edgeseg.gating.junit import write_junit

    notebook = tmp_path / "run.md"
    notebook.write_text("# My lab notebook\nToday I tried edgeseg on chest x-rays\n")
    pytest_junit = tmp_path / "results.xml"
    pytest_junit.write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest"><testcase '
                            'classname="tests.test_edgeseg_cli" name="t"/></testsuite></testsuites>')
    entity = tmp_path / "e.xml"
    entity.write_text('<!DOCTYPE x [<!ENTITY a "edgeseg-gate">]><testsuites name="&a;"/>')
    assert not any(map(written_by_edgeseg, (notebook, pytest_junit, entity)))
    report = tmp_path / "bench.md"
    report.write_text("# edgeseg bench: `b` (from `c`)\n")
    ours = tmp_path / "gate.xml"
    write_junit({"checks": [], "notes": [], "passed": True}, ours)
    assert written_by_edgeseg(report) and written_by_edgeseg(ours)


def test_a_killed_commands_temporary_beside_its_output_is_swept_by_the_next(phantom_demo, tmp_path):
    """atomic_write's temporary of a process that is gone, beside an output the next command writes, is removed;
    another file's temporary and a live process's are not."""
    from edgeseg.housekeeping import owner_tag

    dead_tag = owner_tag().replace(f"-{__import__('os').getpid()}-", "-999999999-", 1)
    stale = tmp_path / f".e.json{dead_tag}abcd1234.json"
    other = tmp_path / f".other.json{dead_tag}abcd1234.json"
    live = tmp_path / f".e.json{owner_tag()}abcd1234.json"
    for path in (stale, other, live):
        path.write_text("{")
    result = _run("evaluate", default_checkpoint(), "--data", phantom_demo, "--out", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    assert not stale.exists() and other.exists() and live.exists()
