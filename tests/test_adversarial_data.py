"""Honest drift against hostile or surprising data (issue G items 9, 10, 11, 14b, 14e, 15): overlap checks by
case content, test-set layouts, one-case intervals, malformed splits, 2D models on volumes, bench exit codes."""
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeseg.checkpoint import load_checkpoint
from edgeseg.cli import app
from edgeseg.data import write_phantom_dataset
from edgeseg.data.nnunet import NnUNetDataset
from edgeseg.demo import default_checkpoint
from edgeseg.errors import EdgesegError

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _content(root: Path, case_id: str, images: str = "imagesTr") -> str:
    """What a case's images hold, independent of its folder or name."""
    h = hashlib.sha256()
    for f in sorted((root / images).glob(f"{case_id}_*")):
        h.update(f.read_bytes())
    return h.hexdigest()


def _renamed_copy(src: Path, dst: Path, splits: dict | None = None) -> Path:
    """The same cases in another folder under other case ids (``phantom_`` → ``copy_``), with ``splits``
    (in source ids) as its splits.json."""
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(parents=True)
        for f in (src / sub).iterdir():
            shutil.copyfile(f, dst / sub / f.name.replace("phantom_", "copy_"))
    shutil.copyfile(src / "dataset.json", dst / "dataset.json")
    splits = splits or json.loads((src / "splits.json").read_text())
    renamed = {k: [c.replace("phantom_", "copy_") for c in v] for k, v in splits.items()}
    (dst / "splits.json").write_text(json.dumps(renamed))
    return dst


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """12 phantom cases: 9 train, 3 val (splits.json)."""
    return write_phantom_dataset(tmp_path_factory.mktemp("src") / "src", cases=12, size=32, seed=5)


@pytest.fixture(scope="module")
def phantom_model():
    return load_checkpoint(default_checkpoint())


def _resolve(spec, **kwargs):
    from edgeseg.compression.pipeline import CompressConfig, resolve_data

    cfg = CompressConfig(**{"checkpoint": default_checkpoint(), "out": Path("unused"), "targets": ["onnxruntime"],
                            "calib_size": 16, **kwargs})
    return resolve_data(cfg, spec, [tuple(spec.preprocessing.size)])


# item 9: overlap by content, not by folder name


def test_calibration_npz_of_the_evaluated_cases_is_refused_under_another_folder_name(source, phantom_model, tmp_path):
    from edgeseg.calibration import build_calibration_set, save_calibration

    _, spec = phantom_model
    npz = save_calibration(tmp_path / "calib.npz", build_calibration_set(source, spec.preprocessing, 2, 8, split="val"))
    copy = _renamed_copy(source, tmp_path / "renamed")
    with pytest.raises(EdgesegError, match="shares 3 case"):
        _resolve(spec, calib=npz, eval_data=copy)


def test_calibration_folder_leaves_out_cases_evaluated_from_a_renamed_copy(source, phantom_model, tmp_path):
    _, spec = phantom_model
    src_splits = json.loads((source / "splits.json").read_text())
    evaluated = src_splits["train"][:4]  # the copy evaluates on 4 of the source's training cases
    copy = _renamed_copy(source, tmp_path / "renamed", {"train": src_splits["val"], "val": evaluated})
    _, eval_ids, calib, _ = _resolve(spec, calib=source, eval_data=copy)
    assert len(eval_ids) == 4
    evaluated_content = {_content(copy, c) for c in eval_ids}
    calibrated_content = {_content(source, c) for c in calib.case_ids}
    assert calib.case_ids and not calibrated_content & evaluated_content
    assert sorted(calib.manifest["case_sha256"]) == calib.case_ids  # recorded, so a saved .npz can be checked too


def test_an_image_repeated_under_a_training_id_stays_out_of_calibration_and_tuning(source, phantom_model, tmp_path):
    """DDTI keeps one case per nodule, so one image can be a validation case and a training case (other mask).
    Found with the README's thyroid walkthrough: `bench` on the whole val split then found an evaluated image in
    the bundle's calibration set and could not calibrate its INT8 baselines (exit 4). Every held-back image is
    left out of calibration and tuning by content, not only the first --eval-cases ones."""
    from edgeseg.tuning.accuracy_aware import AccuracyAwareSettings, _tuning_scorer
    from edgeseg.tuning.search import DiceLimits

    model, spec = phantom_model
    data = _renamed_copy(source, tmp_path / "dup")
    splits = json.loads((data / "splits.json").read_text())
    last_val, twin = splits["val"][-1], splits["train"][0]
    for sub in ("imagesTr",):  # the training case gets the last validation case's image, keeps its own mask
        for f in (data / sub).glob(f"{last_val}_*"):
            shutil.copyfile(f, data / sub / f.name.replace(last_val, twin))
    _, eval_ids, calib, _ = _resolve(spec, calib=data, eval_cases=1)  # 16 samples: every training case it may use
    assert last_val not in eval_ids and sorted(calib.case_ids) == sorted(set(splits["train"]) - {twin})
    # what is left for tuning (training cases minus calibration) is the twin alone, and it is not used
    settings = AccuracyAwareSettings(limits=DiceLimits(0.5), tune_data=data, tune_cases=16)
    with pytest.raises(EdgesegError, match="evaluated images are removed"):
        _tuning_scorer(settings, model, spec, calib, None, NnUNetDataset(data), eval_ids, 0)


def test_tuning_cases_are_checked_against_evaluation_and_calibration_by_content(source, phantom_model, tmp_path):
    from edgeseg.calibration import build_calibration_set
    from edgeseg.tuning.accuracy_aware import AccuracyAwareSettings, _tuning_scorer
    from edgeseg.tuning.scorer import tuning_cases
    from edgeseg.tuning.search import DiceLimits

    model, spec = phantom_model
    src_splits = json.loads((source / "splits.json").read_text())
    calib = build_calibration_set(source, spec.preprocessing, 2, 4, split="train")
    # tuning data = the evaluated (val) cases under other names, offered as a training split
    as_train = _renamed_copy(source, tmp_path / "a", {"train": src_splits["val"], "val": src_splits["train"]})
    settings = AccuracyAwareSettings(limits=DiceLimits(0.5), tune_data=as_train, tune_cases=3)
    evaluated = NnUNetDataset(source)
    with pytest.raises(EdgesegError, match="no train cases left for tuning once the calibration cases and the "
                                           "evaluated images are removed"):
        _tuning_scorer(settings, model, spec, calib, None, evaluated, src_splits["val"], 0)
    # tuning data = the calibration source under other names: the calibration cases are left out by content
    copy = _renamed_copy(source, tmp_path / "b")
    ids = tuning_cases(spec, NnUNetDataset(copy), calib, "train", 16)
    assert ids and not {_content(copy, c) for c in ids} & {_content(source, c) for c in calib.case_ids}


# item 10: same name, other cases; nnU-Net's test layout


def _test_layout(root: Path, labels: bool = True) -> Path:
    """A phantom dataset moved to nnU-Net's test layout (imagesTs/labelsTs, no imagesTr)."""
    (root / "imagesTr").rename(root / "imagesTs")
    if labels:
        (root / "labelsTr").rename(root / "labelsTs")
    else:
        shutil.rmtree(root / "labelsTr")
    (root / "splits.json").unlink()
    return root


def test_dataset_named_like_the_training_data_but_with_other_cases_is_not_matched_by_name(phantom_model, tmp_path):
    _, spec = phantom_model
    assert spec.data["dataset"] == "phantom" and len(spec.data["val_cases"]) == 20
    data = write_phantom_dataset(tmp_path / "phantom", cases=12, size=32, seed=9)  # 12 cases, 80 recorded
    _, eval_ids, calib, _ = _resolve(spec, calib=data)
    assert eval_ids == NnUNetDataset(data).split("val")
    assert not set(calib.case_ids) & set(eval_ids)


def test_split_test_reads_images_ts_and_labels_are_optional(tmp_path):
    labelled = _test_layout(write_phantom_dataset(tmp_path / "phantom", cases=3, size=32, seed=2))
    out = tmp_path / "eval.json"
    res = _run("evaluate", default_checkpoint(), "--data", labelled, "--split", "test", "--out", out)
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["split"] == "test" and result["num_cases"] == 3
    unlabelled = _test_layout(write_phantom_dataset(tmp_path / "unl" / "phantom", cases=3, size=32, seed=2), False)
    assert len(NnUNetDataset(unlabelled, require_labels=False, test=True).split("test")) == 3
    res = _run("evaluate", default_checkpoint(), "--data", unlabelled, "--split", "test")
    assert res.exit_code == 2 and "labelsTs" in res.output and "Traceback" not in res.output


def test_bench_compare_baselines_on_a_test_only_folder_calibrates_on_the_bundle_set(bundle, tmp_path):
    from edgeseg.benchmark.harness import BenchConfig, run_bench
    from edgeseg.benchmark.schema import validate_result
    from edgeseg.bundle import read_manifest

    manifest = read_manifest(bundle)
    carried = manifest["extra_files"]["calibration"]
    assert carried in manifest["extra_hashes"] and (bundle / carried).stat().st_size < 4e6
    data = _test_layout(write_phantom_dataset(tmp_path / "phantom", cases=3, size=64, seed=11))
    result = run_bench(BenchConfig(bundle=bundle, data=data, split="test", compare_baselines=True,
                                   backends=["onnxruntime"], latency=False))
    assert validate_result(result) == []
    assert result["data"]["split"] == "test" and len(result["data"]["cases"]) == 3
    arts = {a["name"]: a for a in result["artifacts"]}
    ort = arts["baseline:ort-quantize-static-defaults"]
    assert ort["status"] == "measured", ort["notes"]
    assert any("bundle's calibration set" in n for n in result["notes"])
    assert result["incomplete"] == []


def test_tampered_bundled_calibration_set_is_not_used(bundle, tmp_path):
    from edgeseg.benchmark.harness import BenchConfig, run_bench
    from edgeseg.bundle import read_manifest

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    carried = copy / read_manifest(copy)["extra_files"]["calibration"]
    carried.write_bytes(carried.read_bytes()[:-8] + b"\0" * 8)
    data = _test_layout(write_phantom_dataset(tmp_path / "phantom", cases=2, size=64, seed=12))
    result = run_bench(BenchConfig(bundle=copy, data=data, split="test", compare_baselines=True,
                                   backends=["onnxruntime"], latency=False))
    ort = {a["name"]: a for a in result["artifacts"]}["baseline:ort-quantize-static-defaults"]
    assert ort["status"] == "not_measured"
    assert "baseline:ort-quantize-static-defaults" in {i["name"] for i in result["incomplete"]}


def test_older_bundle_without_a_carried_set_rebuilds_it_only_from_its_unchanged_recorded_cases(bundle, phantom_demo,
                                                                                              tmp_path):
    from edgeseg.benchmark.harness import _calibration
    from edgeseg.bundle import read_manifest
    from edgeseg.checkpoint import read_spec

    manifest = read_manifest(bundle)
    older = {k: v for k, v in manifest.items() if k not in ("extra_files", "extra_hashes")}
    spec = read_spec(bundle / "torch-fp32.ckpt")
    evaluated = manifest["evaluation"]["cases"]
    calib, how = _calibration(bundle, older, spec, NnUNetDataset(phantom_demo), evaluated)
    assert calib.case_ids == manifest["calibration"]["cases"] and "rebuilt" in how
    other = _test_layout(write_phantom_dataset(tmp_path / "phantom", cases=2, size=64, seed=12))
    with pytest.raises(EdgesegError, match="does not hold its 16 calibration cases"):
        _calibration(bundle, older, spec, NnUNetDataset(other, test=True), ["phantom_0000"])


# item 11: intervals


def test_interval_over_one_case_is_not_a_zero_width_interval():
    from edgeseg.benchmark.drift import bootstrap_mean_ci
    from edgeseg.benchmark.report import _points_ci

    one = bootstrap_mean_ci([-0.0038])
    assert one == {"mean": -0.0038, "low": None, "high": None, "n": 1}
    assert _points_ci(one) == "−0.38 n/a (1 case)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = bootstrap_mean_ci([0.01] * 20)
    assert same["low"] == same["high"] == pytest.approx(0.01) and same["n"] == 20


def test_interval_is_scipy_bca_with_a_fixed_seed():
    from scipy import stats

    from edgeseg.benchmark.drift import bootstrap_mean_ci

    values = np.r_[np.zeros(12), -0.4, -0.02, 0.01, -0.25]  # skewed: BCa differs from the percentile interval
    ci = bootstrap_mean_ci(values)
    expected = stats.bootstrap((values,), np.mean, n_resamples=2000, confidence_level=0.95, method="BCa",
                               rng=np.random.default_rng(0)).confidence_interval
    assert (ci["low"], ci["high"]) == pytest.approx((expected.low, expected.high))
    assert bootstrap_mean_ci(values) == ci


def test_bench_report_says_na_for_one_case(bundle, phantom_demo, tmp_path):
    out = tmp_path / "one.json"
    res = _run("bench", bundle, "--data", phantom_demo, "--cases", 1, "--backends", "onnxruntime", "--no-latency",
               "--out", out)
    assert res.exit_code == 0, res.output
    drift = {a["name"]: a for a in json.loads(out.read_text())["artifacts"]}["x86-onnxruntime-int8"]["accuracy"]["drift"]
    assert drift["organ"]["low"] is None and drift["organ"]["n"] == 1
    assert "n/a (1 case)" in out.with_suffix(".md").read_text()


# item 14b: malformed splits.json


@pytest.mark.parametrize("payload, field", [('{"train": "phantom_0003", "val": ["phantom_0000"]}', "'train'"),
                                            ('{"train": [3, 4], "val": ["phantom_0000"]}', "'train'"),
                                            ('{"val": ["phantom_0000"]}', "'train'"),
                                            ('[]', "fold 0"), ('["x"]', "fold 0"), ('"train"', "'train'"),
                                            ('{"train": ["phantom_0003"]', "JSON")])
def test_malformed_splits_json_is_one_line_naming_file_and_field(tmp_path, payload, field):
    data = write_phantom_dataset(tmp_path / "ds", cases=4, size=32, seed=1)
    (data / "splits.json").write_text(payload)
    with pytest.raises(EdgesegError) as err:
        NnUNetDataset(data).split("train")
    assert "splits.json" in str(err.value) and field in str(err.value) and "\n" not in str(err.value)


def test_malformed_splits_json_in_the_cli_is_not_a_traceback(tmp_path):
    data = write_phantom_dataset(tmp_path / "ds", cases=4, size=32, seed=1)
    (data / "splits.json").write_text('{"train": 7, "val": 8}')
    res = _run("evaluate", default_checkpoint(), "--data", data)
    assert res.exit_code == 2 and "splits.json" in res.output and "Traceback" not in res.output


# item 14e: a 2D model trained on volume slices


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("vol") / "vol", cases=5, size=32, dims=3, seed=6)


def _tiny(data: Path, out: Path, *extra) -> Path:
    res = _run("train", "--data", data, "--out", out, "--arch", "unet", "--size", 32, "--epochs", 1, "--max-steps", 1,
               "--batch-size", 2, "--arch-arg", "base=4", "--arch-arg", "max_width=8", *extra)
    assert res.exit_code == 0, res.output
    return out


def test_2d_model_on_volume_slices_compresses_benches_and_evaluates(volumes, tmp_path):
    ckpt = _tiny(volumes, tmp_path / "m2d.ckpt")
    out = tmp_path / "b"
    res = _run("compress", ckpt, "--precision", "fp32", "--targets", "onnx", "--eval-data", volumes,
               "--latency-repeats", 2, "--out", out)
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["image_dims"] == 3 and "parity_vs_torch" in manifest["artifacts"][1]
    res = _run("bench", out, "--data", volumes, "--split", "all", "--cases", 2, "--no-latency", "--out",
               tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    res = _run("evaluate", ckpt, "--data", volumes, "--split", "all")
    assert res.exit_code == 0, res.output


def test_dimensionality_mismatch_names_the_file(volumes, tmp_path):
    ckpt = tmp_path / "m3d.ckpt"
    res = _run("train", "--data", volumes, "--out", ckpt, "--arch", "unet3d", "--size", 16, "--resize", "pad",
               "--epochs", 1, "--max-steps", 1, "--batch-size", 2, "--arch-arg", "base=4", "--arch-arg", "depth=2")
    assert res.exit_code == 0, res.output
    flat = write_phantom_dataset(tmp_path / "flat", cases=3, size=32, seed=1)
    res = _run("evaluate", ckpt, "--data", flat, "--split", "all")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "phantom_0000_0000.png" in res.output and "3D model" in res.output
    res = _run("compress", ckpt, "--precision", "fp32", "--targets", "onnx", "--eval-data", flat, "--out",
               tmp_path / "b")
    assert res.exit_code == 2 and "Traceback" not in res.output and "_0000.png" in res.output


# item 15: bench exit codes


def test_bench_exits_non_zero_when_something_asked_for_was_not_measured(bundle, phantom_demo, tmp_path):
    broken = tmp_path / "unpruned.ckpt"
    broken.write_bytes(b"not a checkpoint at all" * 10)
    out = tmp_path / "r.json"
    res = _run("bench", bundle, "--data", phantom_demo, "--cases", 2, "--backends", "onnxruntime", "--no-latency",
               "--baseline-checkpoint", broken, "--out", out)
    assert res.exit_code == 4, res.output
    assert "not measured" in res.output and "baseline:unpruned" in res.output
    result = json.loads(out.read_text())  # what was measured is still written
    arts = {a["name"]: a for a in result["artifacts"]}
    assert arts["baseline:unpruned"]["status"] == "not_measured" and arts["x86-onnxruntime-int8"]["accuracy"]
    assert [i["name"] for i in result["incomplete"]] == ["baseline:unpruned"]
    help_text = _run("bench", "--help").output
    assert "Exit codes" in help_text and "4" in help_text
