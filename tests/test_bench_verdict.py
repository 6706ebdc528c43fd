"""Issue H: the verdict (bench and compress), speed-ups with their spread, short unique names in 80-column tables,
and the bench plot (confidence intervals, a y-range of at least ±1 Dice point, labels that do not overlap)."""
import copy
import io
import json
import re

import pytest
from rich.console import Console
from test_bench_report import _accuracy, _artifact, result  # noqa: F401 — result: the realistic result fixture
from typer.testing import CliRunner

from edgeseg.benchmark.plot import MIN_HALF_RANGE, pareto_figure, text_box
from edgeseg.benchmark.ratios import add_ratios, format_speedup, run_noise, speedup
from edgeseg.benchmark.report import markdown_report, print_bench_summary
from edgeseg.benchmark.schema import validate_result
from edgeseg.benchmark.tables import name_legend, short_names
from edgeseg.benchmark.verdict import bench_verdict, check_limit_labels, compress_points, decide
from edgeseg.cli import app
from edgeseg.errors import EdgesegError

LIMITS = {"max_dice_drop_points": 0.5, "per_label_points": {}}


def _rounds(artifact: dict, model: list[float], e2e: list[float] | None = None) -> dict:
    """Give an artifact per-round medians (its p50 stays the pooled value)."""
    artifact["latency"]["batch_1"]["round_p50_ms"] = model
    if e2e is not None:
        total = artifact["end_to_end"]["p50_ms"]
        artifact["end_to_end"].update(round_p50_ms=e2e, stages_ms={"read": 2.0, "preprocess_postprocess": 3.0,
                                                                    "infer": total - 7.0, "write": 2.0},
                                      infer_fraction=(total - 7.0) / total)
    return artifact


def _thyroid_like(base: dict) -> dict:
    """What the issue saw on thyroid data: the NNCF-defaults baseline beats the bundle's OpenVINO INT8 on Dice
    and end to end (13.5 vs 20.0 ms), and the demo's lesion drift (−1.96 pts, worst case −15.9) on ONNX Runtime."""
    ref = _artifact("torch-fp32", "bundle", "torch", "fp32", accuracy=_accuracy(0.80, 0.0, 1.0), p50=53.2, e2e=60.0)
    ov = _artifact("x86-avx512-openvino-int8", "bundle", "openvino", "int8", profile="x86-avx512",
                   accuracy=_accuracy(0.7992, -0.0008, 0.99), p50=7.5, e2e=20.0)
    ort = _artifact("x86-onnxruntime-int8", "bundle", "onnxruntime", "int8", profile="x86",
                    accuracy=_accuracy(0.79, -0.0001, 0.99), p50=9.0, e2e=24.0)
    ort["accuracy"]["drift"]["lesion"] = {"mean": -0.0196, "low": -0.03, "high": -0.01, "n": 3}
    ort["accuracy"]["worst_case"]["lesion"] = {"case": "case_007", "delta": -0.159}
    fp32 = _artifact("x86-onnxruntime-fp32", "bundle", "onnxruntime", "fp32", profile="x86",
                     accuracy=_accuracy(0.80, 0.0, 1.0), p50=30.0, e2e=40.0)
    nncf = _artifact("baseline:nncf-defaults", "baseline", "openvino", "int8", accuracy=_accuracy(0.8000, 0.0, 0.99),
                     p50=6.0, e2e=13.5)
    fp32["role"] = "baseline"  # as bench assigns it: an FP32 artifact of the bundle
    base["artifacts"] = [_rounds(ref, [52.0, 54.0], [59.0, 61.0]), _rounds(ov, [7.4, 7.6], [19.5, 20.5]),
                         _rounds(ort, [8.9, 9.1], [23.0, 25.0]), _rounds(fp32, [29.0, 31.0], [39.0, 41.0]),
                         _rounds(nncf, [5.9, 6.1], [13.4, 13.6])]
    base["bundle"]["verification"] = {"ok": True, "problems": []}
    base["device"]["cpu"]["isa"].append("avx512_bf16")
    add_ratios(base["artifacts"], "torch-fp32", 0.10)
    base["verdict"] = bench_verdict(base, LIMITS)
    return base


@pytest.fixture
def thyroid(result):  # noqa: F811
    return _thyroid_like(result)


def test_verdict_recommends_names_the_beating_baseline_and_the_broken_limit(thyroid):
    v = thyroid["verdict"]
    assert validate_result(thyroid) == []
    assert v["basis"] == "end_to_end" and v["recommended"]["name"] == "x86-avx512-openvino-int8"
    assert v["recommended"]["p50_ms"] == 20.0 and v["recommended"]["speedup_vs_reference"]["value"] == 3.0
    assert [b["name"] for b in v["beaten_by"]] == ["baseline:nncf-defaults"]
    advice = v["beaten_by"][0]["advice"]
    assert "--no-preset" in advice and "x86-avx512-openvino-int8-bf16" in advice and "chest.ckpt" in advice
    (broken,) = v["breaks"]
    assert broken["name"] == "x86-onnxruntime-int8" and broken["limit"]["label"] == "lesion"
    assert broken["text"] == "lesion mean −1.96 pts [−3.00, −1.00] (limit −0.5; worst case case_007 −15.9)"
    lines = v["lines"]
    assert lines[0].startswith("limits: mean Dice drop ≤ 0.5 pts per label") and "end-to-end p50" in lines[0]
    assert lines[1].startswith("recommended: x86-avx512-openvino-int8 (20.0 ms, 3.00× faster than torch-fp32 "
                               "(rounds 2.98–3.03))")
    assert lines[2].startswith("beats every candidate: baseline:nncf-defaults (13.5 ms, 1.48× faster than the "
                               "recommendation")
    assert lines[3].startswith("breaks a limit: x86-onnxruntime-int8: lesion mean −1.96 pts")
    # the same limits per label: a looser lesion limit lets the ONNX Runtime artifact through
    looser = bench_verdict(thyroid, {"max_dice_drop_points": 0.5, "per_label_points": {"lesion": 2.5}})
    assert looser["breaks"] == [] and "lesion 2.5" in looser["lines"][0]
    with pytest.raises(EdgesegError, match="--per-label names tumour; the model's labels are organ, lesion"):
        check_limit_labels({"per_label_points": {"tumour": 1.0}}, ["background", "organ", "lesion"])


def test_verdict_noise_vanished_structures_and_model_fallback(thyroid):
    close = copy.deepcopy(thyroid)  # the baseline only 5 % faster: within the noise, not a win
    close["artifacts"][4]["end_to_end"]["p50_ms"] = 19.0
    assert bench_verdict(close)["beaten_by"] == []
    vanished = copy.deepcopy(thyroid)
    vanished["artifacts"][1]["accuracy"]["structure_changes"] = [
        {"case": "case_004", "label": "lesion", "change": "vanished", "reference_voxels": 12, "artifact_voxels": 0}]
    v = bench_verdict(vanished)
    assert v["recommended"]["name"] == "x86-onnxruntime-fp32"  # the only deployable artifact left in the limits
    assert "breaks a limit: x86-avx512-openvino-int8: 1 structure(s) of the reference masks vanished, e.g. lesion " \
           "in case_004 (limit: none may vanish)" in v["lines"]
    model_only = copy.deepcopy(thyroid)
    for a in model_only["artifacts"]:
        a["end_to_end"] = None
    v = bench_verdict(model_only)
    assert v["basis"] == "model" and v["recommended"]["name"] == "x86-avx512-openvino-int8"
    assert "end-to-end latency was not measured: ranked by model-only latency" in v["lines"]
    assert [b["name"] for b in v["beaten_by"]] == ["baseline:nncf-defaults"]  # 6.0 vs 7.5 ms model-only


def test_verdict_reads_the_same_in_json_markdown_and_terminal(thyroid):
    markdown = markdown_report(thyroid)
    section = markdown.split("## Verdict")[1].split("\n## ")[0]
    assert [ln[2:] for ln in section.strip().splitlines()] == thyroid["verdict"]["lines"]
    out = io.StringIO()
    print_bench_summary(thyroid, Console(file=out, width=80))
    text = out.getvalue()
    tail = text[text.rindex("\nverdict\n"):]  # the verdict ends the output
    assert " ".join(tail.split()) == " ".join(["verdict", *(" ".join(ln.split()) for ln in thyroid["verdict"]["lines"])])
    assert "vs baseline" not in text  # no pairwise speed-up lines any more


def test_speedup_spread_and_rounds_that_disagree():
    slow, fast = {"p50_ms": 10.0, "round_p50_ms": [9.0, 11.0]}, {"p50_ms": 2.0, "round_p50_ms": [2.0, 2.0]}
    r = speedup(slow, fast, noise=0.10)
    assert (r["value"], r["low"], r["high"], r["rounds"], r["agree"]) == (5.0, 4.5, 5.5, 2, False)
    assert format_speedup(r) == "5.00× (4.5–5.5)!"
    assert speedup(slow, fast, noise=0.25)["agree"] is True
    assert speedup({"p50_ms": 10.0, "round_p50_ms": [10.0]}, fast)["low"] is None
    assert speedup(None, fast) is None and format_speedup(None) == "—"
    workload = {"runtime": "onnxruntime", "latency": {"batch_1": {"round_p50_ms": [1.0, 1.3]}},
                "by_runtime": {"openvino": {"latency": {"batch_1": {"round_p50_ms": [2.0, 2.1]}}}}}
    assert run_noise(workload)["relative"] == pytest.approx(0.3 / 1.15)
    assert run_noise(workload, ["openvino"])["relative"] == 0.10  # 5 % spread: the floor
    assert run_noise(None)["source"].startswith("floor")


def test_short_names_are_unique_and_explained():
    names = ["torch-fp32", "x86-onnxruntime-int8", "x86-avx512-openvino-int8", "rtx-tensorrt-int8",
             "jetson-orin-tensorrt-int8", "baseline:openvino-default", "baseline:openvino-f32",
             "baseline:ort-quantize-static-defaults", "baseline:nncf-defaults", "ov-int8"]
    short = short_names(names)
    assert len(set(short.values())) == len(names)
    assert short["x86-onnxruntime-int8"] == "ort-int8" and short["torch-fp32"] == "torch-fp32"
    assert short["rtx-tensorrt-int8"] == "rtx-trt-int8" and short["jetson-orin-tensorrt-int8"] == "jetson-orin-trt-int8"
    assert short["ov-int8"] == "ov-int8" and short["x86-avx512-openvino-int8"] == "x86-avx512-ov-int8"
    assert short["baseline:ort-quantize-static-defaults"] == "base:ort-defaults"
    legend = name_legend(short)
    assert "base:ort-defaults = baseline:ort-quantize-static-defaults" in legend
    assert "base:ov-f32 = baseline:openvino-f32" in legend
    assert not any(line.startswith("base:nncf-defaults") for line in legend)  # only the prefix differs: one line
    assert legend[-1].startswith("base: = a baseline bench built for comparison")


def _rendered(print_fn, data, width: int = 80) -> str:
    out = io.StringIO()
    print_fn(data, Console(file=out, width=width))
    return out.getvalue()


def test_bench_tables_fit_80_columns_without_cutting_a_name(thyroid):
    thyroid["artifacts"].append(_artifact("baseline:openvino-f32", "baseline", "openvino", "fp32",
                                          accuracy=_accuracy(0.8, 0.0, 1.0), p50=20.0, e2e=30.0))
    thyroid["artifacts"].append(_artifact("baseline:openvino-default", "baseline", "openvino", "fp32",
                                          accuracy=_accuracy(0.8, 0.0, 1.0), p50=15.0, e2e=25.0))
    text = _rendered(print_bench_summary, thyroid)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    for header in ("ran as", "Dice", "agree", "worst case", "MB", "model ms", "× ref", "e2e ms", "e2e × ref"):
        assert header in text  # no column dropped
    rows = [line.split()[0] for line in text.splitlines() if line[:1].strip()]
    for name in ("torch-fp32", "ov-int8", "ort-int8", "ort-fp32", "base:nncf-defaults", "base:ov-f32",
                 "base:ov-default"):
        assert rows.count(name) == 2  # whole, once per table
    assert "ov-int8 = x86-avx512-openvino-int8" in text


def test_compress_summary_at_80_columns_with_the_same_verdict(bundle):
    from edgeseg.bundle import read_manifest
    from edgeseg.report import compress_verdict, print_compress_summary

    manifest = read_manifest(bundle)
    text = _rendered(print_compress_summary, manifest)
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    flat = " ".join(text.split())
    assert re.search(r"Dice on the first 8 of \d+ held-back validation cases of \S+ \(--eval-cases 0: all \d+", flat)
    verdict = compress_verdict(manifest)
    assert verdict == decide(compress_points(manifest), "torch-fp32", {}, checkpoint="phantom_hybrid.ckpt",
                             isa=manifest["device"]["cpu"]["isa"])
    assert verdict["basis"] == "model" and "end-to-end latency was not measured" in flat
    for line in verdict["lines"]:
        assert " ".join(line.split()) in flat
    rows = [line.split()[0] for line in text.splitlines() if line[:1].strip()]
    assert rows.count("ort-int8") == 2 and rows.count("ov-int8") == 2


def test_gate_table_uses_the_short_names(capsys):
    from edgeseg.gating.check import Check
    from edgeseg.gating.report import print_gate

    checks = [Check("x86-onnxruntime-int8", "latency p50", False, 10.0, 13.0, "+10%", "slower beyond the limit"),
              Check("x86-onnxruntime-int8-bf16", "latency p50", True, 10.0, 10.1, "+10%", "within")]
    print_gate({"checks": checks, "notes": [], "device_class": "cpu-x86", "metric": "p50", "mode": "workload",
                "runs": 2, "baseline_runs": 2}, "baseline.json")
    out = capsys.readouterr().out
    assert "ort-int8 " in out and "ort-int8-bf16" in out and "ort-int8 = x86-onnxruntime-int8" in out


def test_plot_has_intervals_a_wide_y_range_and_no_overlapping_labels(thyroid):
    fp32_crowd = [_artifact(f"baseline:{n}", "baseline", rt, "fp32", accuracy=_accuracy(0.80, 0.0, 1.0), p50=p, e2e=e)
                  for n, rt, p, e in (("openvino-f32", "openvino", 30.5, 40.5), ("torch-compile", "torch", 31.0, 41.0))]
    thyroid["artifacts"] += fp32_crowd  # three FP32 points on top of each other: their labels used to collide
    fig = pareto_figure(thyroid)
    ref_dice = 0.80
    for ax in fig.axes:
        low, high = ax.get_ylim()
        assert low <= ref_dice - MIN_HALF_RANGE and high >= ref_dice + MIN_HALF_RANGE
        renderer = fig.canvas.get_renderer()
        boxes = [text_box(t, renderer) for t in ax.texts]
        assert len(boxes) == len(thyroid["artifacts"])
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), (a, b)
        # the candidate's vertical bar is the bootstrap interval of its difference, placed at the reference's Dice
        segments = [seg for c in ax.containers if hasattr(c, "lines") and c.lines[2]
                    for coll in c.lines[2] for seg in coll.get_segments()]
        assert any(abs(s[0][1] - (ref_dice - 0.0008 - 0.0004)) < 1e-9 and abs(s[1][1] - (ref_dice - 0.0008 + 0.0004)) < 1e-9
                   for s in segments)
    fig.savefig(io.BytesIO(), format="png")


def test_bench_cli_ends_with_the_verdict_in_every_output(bundle, phantom_demo, tmp_path):
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, [str(a) for a in (
        "bench", bundle, "--data", phantom_demo, "--cases", 4, "--backends", "openvino", "--repeats", 4, "--rounds", 2,
        "--warmup", 1, "--batch-size", 0, "--e2e-cases", 2, "--max-dice-drop", 0.5, "--per-label", "lesion=1.0",
        "--out", out)])
    assert res.exit_code == 0, res.output
    measured = json.loads(out.read_text())
    assert validate_result(measured) == []
    v = measured["verdict"]
    assert v["limits"] == {"max_dice_drop_points": 0.5, "per_label_points": {"lesion": 1.0}}
    assert v["basis"] == "end_to_end" and v["noise"]["relative"] >= 0.10
    for a in measured["artifacts"]:
        if a["end_to_end"]:
            assert len(a["end_to_end"]["round_p50_ms"]) == 2 and a["end_to_end"]["cases"] == 2
            assert a["ratios"]["e2e_speedup_spread"]["rounds"] == 2
    assert out.with_suffix(".md").read_text().count("## Verdict") == 1
    flat = " ".join(res.output.split())
    assert all(" ".join(line.split()) in flat for line in v["lines"])
    bad = CliRunner().invoke(app, [str(a) for a in ("bench", bundle, "--data", phantom_demo, "--per-label", "tumour=1",
                                                    "--out", tmp_path / "x.json")])
    assert bad.exit_code == 2 and "--per-label names tumour" in bad.output and "Traceback" not in bad.output


def test_infer_reports_model_time_as_bench_defines_it(bundle, phantom_demo, tmp_path):
    from edgeseg.infer.pipeline import Clock, InferConfig, _model_timing

    clock = Clock(calls=[(120.0, 4), (20.0, 4), (24.0, 4)])  # the first call: lazy initialisation, warm-up
    timing = _model_timing(InferConfig(bundle=bundle, inputs=[], out=tmp_path), clock)
    assert timing == {"model_ms_per_image": 5.5, "model_first_call_ms": 120.0, "model_ms_includes_first_call": False,
                      "model_batch": 4, "threads": "runtime default"}
    one = _model_timing(InferConfig(bundle=bundle, inputs=[], out=tmp_path, threads=2), Clock(calls=[(40.0, 2)]))
    assert one["model_ms_per_image"] == 20.0 and one["model_ms_includes_first_call"] and one["threads"] == 2
    images = sorted((phantom_demo / "imagesTr").iterdir())[:6]
    res = CliRunner().invoke(app, [str(a) for a in ("infer", bundle, *images, "-o", tmp_path / "masks", "--batch-size",
                                                    2, "--threads", 2, "--report", tmp_path / "r.json",
                                                    "--no-end-to-end")])  # the host path batches
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["model_calls"] == 3 and report["model_batch"] == 2 and report["threads"] == 2
    assert report["model_first_call_ms"] > 0 and report["model_ms_per_image"] > 0
    assert "ms/image at batch 2 (median call after the first, which took" in " ".join(res.output.split())
