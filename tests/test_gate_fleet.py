"""The gate over a fleet (issue M): results of several device classes, each against its own baseline in
--baseline-dir, one JUnit file with a suite per class; what `bench --ray` runs after gathering its results."""
import copy
import json
import xml.etree.ElementTree as ET

from gate_support import INT8, _gate, _slow_down

from edgeseg.gating import device_class


def _fleet(steady, name):
    res = copy.deepcopy(steady)
    res["device"]["fleet"] = {"device_class": name, "node": f"node-{name}"}
    return res


def test_each_class_is_gated_against_its_own_baseline_in_one_junit_file(steady, tmp_path):
    results = {}
    for name in ("x86-server", "jetson-orin-nano"):
        results[name] = tmp_path / f"{name}.json"
        results[name].write_text(json.dumps(_fleet(steady, name)))
    assert device_class(json.loads(results["x86-server"].read_text())) == "x86-server"
    baselines = tmp_path / "baselines"
    res = _gate(*results.values(), "--baseline-dir", baselines, "--update-baseline")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in baselines.iterdir()) == ["jetson-orin-nano.json", "x86-server.json"]

    junit = tmp_path / "fleet.xml"
    res = _gate(*results.values(), "--baseline-dir", baselines, "--junit", junit)
    assert res.exit_code == 0, res.output
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == ["x86-server", "jetson-orin-nano"]
    assert all(s.get("failures") == "0" and int(s.get("tests")) > 0 for s in suites)

    # the Jetson got 40 % slower: only its suite fails, and the gate exits 1
    results["jetson-orin-nano"].write_text(json.dumps(_slow_down(_fleet(steady, "jetson-orin-nano"), INT8, 1.4)))
    res = _gate(*results.values(), "--baseline-dir", baselines, "--junit", junit)
    assert res.exit_code == 1, res.output
    failures = {s.get("name"): int(s.get("failures")) for s in ET.parse(junit).getroot().findall("testsuite")}
    assert failures["x86-server"] == 0 and failures["jetson-orin-nano"] >= 1
    assert "fleet gate failed" in res.output


def test_a_class_without_a_baseline_is_one_line_of_unusable_input(steady, tmp_path):
    paths = []
    for name in ("a", "b"):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(_fleet(steady, name)))
    baselines = tmp_path / "baselines"
    assert _gate(paths[0], "--baseline-dir", baselines, "--update-baseline").exit_code == 0
    res = _gate(*paths, "--baseline-dir", baselines)
    assert res.exit_code == 2 and "no baseline for device class(es) b" in res.output
    assert "Traceback" not in res.output


def test_the_cluster_example_declares_an_x86_and_a_jetson_device_class():
    import json as _json
    from pathlib import Path

    yaml = __import__("pytest").importorskip("yaml")
    doc = yaml.safe_load((Path(__file__).parents[1] / "docs" / "ray" / "kuberay-fleet.yaml").read_text())
    groups = {g["groupName"]: g for g in doc["spec"]["workerGroupSpecs"]}
    resources = {name: _json.loads(_json.loads(g["rayStartParams"]["resources"])) for name, g in groups.items()}
    assert resources == {"x86-avx2": {"edgeseg-device:cpu-x86_64-avx2-2t": 1},
                         "jetson-orin-nano": {"edgeseg-device:jetson-orin-nano": 1}}
    assert groups["jetson-orin-nano"]["template"]["spec"]["nodeSelector"]["kubernetes.io/arch"] == "arm64"


def test_the_python_api_gates_a_fleet_per_device_class(steady, tmp_path):
    import pytest

    import edgeseg
    from edgeseg.gating import make_baseline

    fleet = [_fleet(steady, "x86-server"), _fleet(steady, "jetson-orin-nano")]
    baselines = tmp_path / "baselines"
    baselines.mkdir()
    for doc in fleet:
        (baselines / f"{device_class(doc)}.json").write_text(json.dumps(make_baseline([doc], ["result"])))
    slower = [fleet[0], _slow_down(copy.deepcopy(fleet[1]), INT8, 1.4)]
    reports = edgeseg.gate_fleet(slower, baselines)
    assert list(reports) == ["x86-server", "jetson-orin-nano"]
    assert reports["x86-server"].passed and not reports["jetson-orin-nano"].passed
    assert any("fleet" in note for note in reports["jetson-orin-nano"].notes)
    with pytest.raises(edgeseg.InputError, match="no baseline for device class"):
        edgeseg.gate_fleet([_fleet(steady, "riscv")], baselines)
