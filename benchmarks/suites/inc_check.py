"""Intel Neural Compressor (INC) 3.x check on the chest X-ray hybrid: does it work with the pinned stack, and does it help?

Runs in its own venv (never the project's .venv), from the repository root:

    python3 -m venv /tmp/inc-venv
    /tmp/inc-venv/bin/pip install torch==2.13.0 "neural-compressor[pt]==3.10" torchao==0.18.0 onnx onnxscript
    /tmp/inc-venv/bin/pip install -e .
    /tmp/inc-venv/bin/python benchmarks/suites/inc_check.py --out /tmp/inc_check.json

What it measures (2 threads, batch 1, 256x256; see docs/neural_compressor.md for the numbers):
  eager        PyTorch eager FP32 (the reference for every ratio and for "agreement with FP32")
  compile      torch.compile FP32 (inductor, freezing=True)
  inc          INC 3.10 static INT8 (StaticQuantConfig defaults = torchao PT2E X86InductorQuantizer,
               U8 asym per-tensor activations with MovingAverageMinMax, S8 sym per-channel weights)
               + torch.compile with inductor freezing (what actually lowers to oneDNN int8 kernels)
  inc_nofreeze the same INC model + plain torch.compile (INC's log only says "please compile it")
  torchao      torchao 0.18 PT2E directly (X86InductorQuantizer defaults: HistogramObserver) + compile/freezing
  autotune     INC autotune over StaticQuantConfig.get_config_set_for_tuning() with a Dice eval_fn
               (on held-out *train* cases, not val), reporting every trial and the wall time

Every step is timed; errors are caught and recorded with their message instead of stopping the run.
Latency: warm-up, then --runs timed calls per variant, medians, variants interleaved in --rounds rounds;
compare the ratios within a round (the 2-core machine is shared and varies a lot between runs).
Accuracy: val Dice vs ground truth with edgeseg.inference.predict_mask + edgeseg.metrics.case_scores,
and agreement with the eager FP32 masks (per-case lung Dice vs the FP32 mask, pixel agreement).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CKPT = REPO / "benchmarks/checkpoints/chest_xray_hybrid.ckpt"
DEFAULT_DATA = REPO.parent / "shared/datasets/Dataset002_ChestXrayLungs"
PACKAGES = ["torch", "torchao", "neural-compressor", "neural-compressor-pt", "onnx", "onnxscript", "numpy",
            "pydantic", "prettytable", "py-cpuinfo", "psutil", "edgeseg"]

RESULT: dict = {"steps": {}, "errors": [], "variants": {}, "latency_rounds": []}


def log(msg: str) -> None:
    print(f"[inc_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Step:
    """Time a step; record the error (type, message, last traceback lines) instead of raising."""

    def __init__(self, name: str, fatal: bool = False):
        self.name, self.fatal = name, fatal

    def __enter__(self):
        self.ok = False
        self.t0 = time.perf_counter()
        log(f"{self.name} ...")
        return self

    def __exit__(self, etype, exc, tb):
        dt = time.perf_counter() - self.t0
        RESULT["steps"][self.name] = round(dt, 2)
        if exc is None:
            self.ok = True
            log(f"{self.name}: {dt:.1f} s")
            return False
        RESULT["errors"].append({"step": self.name, "error": f"{etype.__name__}: {exc}"[:2000],
                                 "traceback": "".join(traceback.format_exception(etype, exc, tb)[-4:])[-3000:]})
        log(f"{self.name} FAILED after {dt:.1f} s: {etype.__name__}: {str(exc)[:300]}")
        return not self.fatal


def versions() -> dict:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    out["python"] = platform.python_version()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    out["cpu_flags"] = [f for f in ("avx512_vnni", "avx512_bf16", "amx_tile", "avx_vnni") if f" {f}" in flags]
    return out


def make_predictor(model):
    import torch

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(batch))).float().numpy()

    return predict


def dice(a: np.ndarray, b: np.ndarray) -> float:
    inter, s = np.logical_and(a, b).sum(), a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * inter / s)


def evaluate(model, cases, spec, fp32_masks=None):
    """Mean val Dice vs GT (per label) and, with fp32_masks, agreement with the FP32 masks."""
    from edgeseg.inference import predict_mask
    from edgeseg.metrics import case_scores, mean_scores

    predict = make_predictor(model)
    per_case, masks, agree_dice, agree_px = [], [], [], []
    t0 = time.perf_counter()
    for i, case in enumerate(cases):
        pred = predict_mask(predict, case.image, spec.preprocessing, spec.spatial_dims)
        masks.append(pred)
        per_case.append(case_scores(pred, case.label, spec.label_names))
        if fp32_masks is not None:
            ref = fp32_masks[i]
            agree_dice.append(dice(pred > 0, ref > 0))
            agree_px.append(float((pred == ref).mean()))
    out = {"dice_vs_gt": {k: round(v["dice"], 5) for k, v in mean_scores(per_case).items()},
           "n_cases": len(cases), "eval_s": round(time.perf_counter() - t0, 1)}
    if fp32_masks is not None:
        out["dice_vs_fp32_mean"] = round(float(np.mean(agree_dice)), 5)
        out["dice_vs_fp32_min"] = round(float(np.min(agree_dice)), 5)
        out["pixel_agreement_vs_fp32"] = round(float(np.mean(agree_px)), 6)
    return out, masks


def quantized_op_summary(gm) -> dict:
    """Which ops consume a dequantize node in a converted PT2E graph (= which ops run INT8 after lowering)."""
    counts: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if any(getattr(a, "op", None) == "call_function" and "dequantize" in str(a.target) for a in node.args):
            name = str(node.target).replace("aten.", "")
            if "quantize" not in name:
                counts[name] = counts.get(name, 0) + 1
    float_ops: dict[str, int] = {}
    for node in gm.graph.nodes:
        t = str(node.target)
        if node.op == "call_function" and any(k in t for k in ("linear", "conv", "matmul", "bmm", "softmax",
                                                                 "layer_norm", "scaled_dot")):
            float_ops[t] = float_ops.get(t, 0) + 1
    return {"ops_fed_by_dequantize": counts, "compute_ops_in_graph": float_ops}


def profile_ops(model, x, top: int = 8) -> list[str]:
    """Top CPU ops of one call (to see whether oneDNN int8 kernels really run)."""
    import torch

    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(x)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [f"{e.key} x{e.count} {e.self_cpu_time_total / 1000:.1f}ms" for e in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=str(DEFAULT_CKPT))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib", type=int, default=32, help="calibration cases (first N of the train split)")
    ap.add_argument("--tune-cases", type=int, default=32,
                    help="held-out train cases (after the calibration ones) scored by the autotune eval_fn")
    ap.add_argument("--val", type=int, default=0, help="limit the val cases (0 = all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--tolerable-loss", type=float, default=0.001,
                    help="autotune: relative Dice loss accepted (INC stops at the first config within it)")
    ap.add_argument("--tune-all", action="store_true",
                    help="autotune: try every config of the tuning set (tolerable loss -1) and keep the best")
    ap.add_argument("--skip", default="", help="comma list of steps to skip: compile,inc,inc_nofreeze,"
                                               "torchao,autotune,save,trap")
    ap.add_argument("--only-tune", action="store_true", help="only the autotune step (and eager reference)")
    ap.add_argument("--warm-cache", action="store_true",
                    help="reuse the default inductor cache (default: a fresh one, so compile times are cold)")
    ap.add_argument("--out", default="/tmp/inc_check.json")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if args.only_tune:
        skip |= {"compile", "inc", "inc_nofreeze", "torchao", "save"}
    if not args.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inc_check_inductor_")

    t_start = time.perf_counter()
    with Step("import torch", fatal=True):
        import torch
        torch.set_num_threads(args.threads)
    RESULT["versions"] = versions()
    RESULT["args"] = vars(args)
    log(f"versions: {RESULT['versions']}")

    with Step("load checkpoint + data", fatal=True):
        from edgeseg.checkpoint import load_checkpoint
        from edgeseg.data.nnunet import NnUNetDataset

        model, spec = load_checkpoint(args.checkpoint)
        model.eval()
        ds = NnUNetDataset(args.data)
        train_ids, val_ids = ds.split("train"), ds.split("val")
        if args.val:
            val_ids = val_ids[: args.val]
        calib_ids = train_ids[: args.calib]
        tune_ids = train_ids[args.calib: args.calib + args.tune_cases]
        val_cases = [ds.load(c) for c in val_ids]
        tune_cases = [ds.load(c) for c in tune_ids]
        calib_x = [torch.from_numpy(spec.preprocessing(ds.load(c).image)[None]) for c in calib_ids]
        x = calib_x[0]
        RESULT["data"] = {"calib_cases": len(calib_ids), "tune_cases": len(tune_ids), "val_cases": len(val_ids),
                          "input_shape": list(x.shape),
                          "params": sum(p.numel() for p in model.parameters())}

    def calibrate(m):
        with torch.no_grad():
            for xb in calib_x:
                m(xb)

    variants: dict[str, object] = {"eager": model}
    with Step("eval eager FP32 (val)"):
        RESULT["variants"]["eager"], fp32_masks = evaluate(model, val_cases, spec)

    def add_variant(name: str, m, freezing: bool | None):
        """Optionally torch.compile (first call timed = compile time), then val Dice + agreement.

        freezing is set with torch._inductor.config.patch around the first call (when dynamo traces):
        torch.compile(m, options={"freezing": True}) is NOT equivalent here (see the "trap" step).
        """
        if freezing is not None:
            m = torch.compile(m)
            with Step(f"{name}: torch.compile first call (freezing={freezing})") as st, torch.no_grad(), \
                    torch._inductor.config.patch(freezing=freezing):
                m(x)
            if not st.ok:
                return
        with Step(f"{name}: eval val") as st:
            RESULT["variants"][name], _ = evaluate(m, val_cases, spec, fp32_masks)
            with torch.no_grad():
                RESULT["variants"][name]["max_abs_logit_diff_vs_fp32"] = round(float((m(x) - model(x)).abs().max()), 4)
        if not st.ok:
            return
        try:
            RESULT["variants"][name]["top_ops"] = profile_ops(m, x)
        except Exception as e:  # noqa: BLE001 - informative only
            RESULT["variants"][name]["top_ops"] = [f"profiler failed: {e}"]
        variants[name] = m

    if "compile" not in skip:
        add_variant("compile", copy.deepcopy(model), True)

    # ---------------- INC static INT8 (PT2E underneath) ----------------
    if not ({"inc", "inc_nofreeze", "save"} <= skip):
        with Step("inc: import neural_compressor.torch"):
            from neural_compressor.torch.export import export as inc_export
            from neural_compressor.torch.quantization import StaticQuantConfig, convert, prepare
        with Step("inc: export (torch.export via INC)"):
            exported = inc_export(copy.deepcopy(model), (x,))
        with Step("inc: prepare"):
            prepared = prepare(exported, StaticQuantConfig(), example_inputs=(x,))
        with Step(f"inc: calibrate ({len(calib_x)} cases)"):
            calibrate(prepared)
        with Step("inc: convert") as st:
            inc_q = convert(prepared)
            RESULT["inc_graph"] = quantized_op_summary(inc_q)
        if st.ok:
            with Step("inc: QDQ graph uncompiled, 3 calls"), torch.no_grad():
                inc_q(x)
                t0 = time.perf_counter()
                for _ in range(3):
                    inc_q(x)
                RESULT["inc_qdq_eager_s_per_call"] = round((time.perf_counter() - t0) / 3, 3)
            if "save" not in skip:
                with Step("inc: save (torch.export .pt2) + load"):
                    d = tempfile.mkdtemp(prefix="inc_saved_")
                    inc_q.save((x,), d)
                    from neural_compressor.torch.quantization import load as inc_load
                    files = {p.name: p.stat().st_size for p in Path(d).iterdir()}
                    reloaded = inc_load(d)
                    with torch.no_grad():
                        same = float((reloaded(x) - inc_q(x)).abs().max())
                    RESULT["inc_saved"] = {"files_bytes": files, "max_abs_diff_reloaded": same,
                                           "fp32_checkpoint_bytes": Path(args.checkpoint).stat().st_size}
            inc_copy = copy.deepcopy(inc_q) if "inc_nofreeze" not in skip else None
            if "trap" not in skip:
                # the obvious spelling: torch.compile(options={"freezing": True}) -> fails on torch 2.13
                with Step("trap: INC model + torch.compile(options={'freezing': True})"), torch.no_grad():
                    torch.compile(copy.deepcopy(inc_q), options={"freezing": True})(x)
            if "inc" not in skip:
                add_variant("inc", inc_q, True)
            if inc_copy is not None:
                add_variant("inc_nofreeze", inc_copy, False)

    # ---------------- torchao PT2E directly ----------------
    if "torchao" not in skip:
        with Step("torchao: export + prepare_pt2e (X86InductorQuantizer defaults)"):
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
                X86InductorQuantizer,
                get_default_x86_inductor_quantization_config,
            )
            gm = torch.export.export(copy.deepcopy(model), (x,)).module()
            quantizer = X86InductorQuantizer()
            quantizer.set_global(get_default_x86_inductor_quantization_config())
            ao_prepared = prepare_pt2e(gm, quantizer)
        with Step(f"torchao: calibrate ({len(calib_x)} cases, HistogramObserver)"):
            calibrate(ao_prepared)
        with Step("torchao: convert_pt2e") as st:
            ao_q = convert_pt2e(ao_prepared)
        if st.ok:
            add_variant("torchao", ao_q, True)

    # ---------------- INC autotune with a Dice eval_fn ----------------
    if "autotune" not in skip:
        trials: list[dict] = []
        RESULT["autotune"] = {"trials": trials, "tolerable_loss": -1.0 if args.tune_all else args.tolerable_loss}

        def eval_fn(m) -> float:
            t0 = time.perf_counter()
            scores, _ = evaluate(m, tune_cases, spec)
            d = float(np.mean(list(scores["dice_vs_gt"].values())))
            qc = getattr(m, "qconfig", None)
            cfg = None
            if qc:
                c = next(iter(qc.values()))
                c = c.to_dict() if hasattr(c, "to_dict") else c
                cfg = {k: c.get(k) for k in ("act_sym", "act_algo", "w_granularity", "act_dtype")}
            trials.append({"config": cfg or "FP32 baseline", "dice": round(d, 5),
                           "eval_s": round(time.perf_counter() - t0, 1), "t": round(time.perf_counter() - t_tune, 1)})
            log(f"autotune eval: {trials[-1]}")
            return d

        best = None
        with Step("autotune: export"):
            from neural_compressor.torch.export import export as inc_export
            from neural_compressor.torch.quantization import StaticQuantConfig, TuningConfig, autotune
            config_set = StaticQuantConfig.get_config_set_for_tuning()  # one expandable config (2 x 2)
            RESULT["autotune"]["config_set"] = str(config_set.to_dict())
            exported = inc_export(copy.deepcopy(model), (x,))
        if "trap" not in skip:
            # INC 3.10 torch autotune iterates tune_config.config_set, so the single expandable config that
            # get_config_set_for_tuning() returns (and TuningConfig documents) fails before any work
            with Step("trap: autotune with TuningConfig(config_set=<single config>)"):
                autotune(exported, tune_config=TuningConfig(config_set=config_set, max_trials=4),
                         eval_fn=lambda m: 0.0, run_fn=calibrate, example_inputs=(x,))
        with Step("autotune: total (baseline + trials)"):
            t_tune = time.perf_counter()
            tune_config = TuningConfig(config_set=[config_set],
                                       tolerable_loss=-1.0 if args.tune_all else args.tolerable_loss,
                                       max_trials=4)  # max_trials > len(set) + goal never met -> autotune returns None
            best = autotune(exported, tune_config=tune_config, eval_fn=eval_fn, run_fn=calibrate,
                            example_inputs=(x,))
            RESULT["autotune"]["returned"] = type(best).__name__
            if best is not None and getattr(best, "qconfig", None):
                c = next(iter(best.qconfig.values()))
                c = c.to_dict() if hasattr(c, "to_dict") else c
                RESULT["autotune"]["best_config"] = {k: c.get(k) for k in ("act_sym", "act_algo")}
        if best is not None:
            best_cfg = RESULT["autotune"].get("best_config", {})
            if best_cfg != {"act_sym": False, "act_algo": "minmax"} or "inc" not in variants:
                add_variant("autotune", best, True)
            else:
                log("autotune picked INC's default config: its val numbers are the 'inc' variant's")

    # ---------------- latency, interleaved rounds ----------------
    # Call-by-call round robin inside each round: every variant sees the same load of the shared machine.
    # Wall time (perf_counter) and process CPU time (process_time, both threads) are recorded per call.
    names = [n for n in ("eager", "compile", "inc", "inc_nofreeze", "torchao", "autotune") if n in variants]
    with Step(f"latency: {args.rounds} rounds x {len(names)} variants x {args.runs} calls"), torch.no_grad():
        for r in range(args.rounds):
            wall: dict[str, list[float]] = {n: [] for n in names}
            cpu: dict[str, list[float]] = {n: [] for n in names}
            for n in names:
                for _ in range(args.warmup):
                    variants[n](x)
            for i in range(args.runs):
                for n in (names if i % 2 == 0 else names[::-1]):
                    c0, t0 = time.process_time(), time.perf_counter()
                    variants[n](x)
                    wall[n].append(time.perf_counter() - t0)
                    cpu[n].append(time.process_time() - c0)
            row = {n: round(statistics.median(wall[n]) * 1000, 1) for n in names}
            row_cpu = {n: round(statistics.median(cpu[n]) * 1000, 1) for n in names}
            RESULT["latency_rounds"].append({
                "median_ms": row, "speedup_vs_eager": {n: round(row["eager"] / row[n], 2) for n in names},
                "median_cpu_ms": row_cpu,
                "cpu_speedup_vs_eager": {n: round(row_cpu["eager"] / row_cpu[n], 2) for n in names},
                "load_avg_1min": os.getloadavg()[0]})
            log(f"round {r + 1}: {RESULT['latency_rounds'][-1]}")

    RESULT["total_s"] = round(time.perf_counter() - t_start, 1)
    Path(args.out).write_text(json.dumps(RESULT, indent=2, default=str))
    log(f"wrote {args.out}; errors: {len(RESULT['errors'])}")
    for e in RESULT["errors"]:
        log(f"ERROR in {e['step']}: {e['error'][:500]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
