"""Where a result was measured: CPU model and ISA flags, cores, RAM, OS, Python and runtime versions, GPU,
Jetson model / L4T release / power mode. Stored in every benchmark result."""
from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
             "asimd", "asimddp", "i8mm", "bf16")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def cpu_info() -> dict:
    """CPU model, the ISA flags that decide INT8/BF16 kernels, logical cores and the cores this process may use."""
    text = _read("/proc/cpuinfo") or ""
    model = re.search(r"^(model name|Model|Hardware)\s*:\s*(.+)$", text, re.M)
    flags_line = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.M)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model.group(2).strip() if model else platform.processor() or platform.machine(),
            "arch": platform.machine(), "isa": sorted(f for f in ISA_FLAGS if f in flags),
            "logical_cores": os.cpu_count(), "usable_cores": usable}


def gpu_info() -> dict | None:
    """NVIDIA GPU name, driver, CUDA (as PyTorch sees it) and TensorRT version, when present."""
    info: dict = {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            name, driver = (v.strip() for v in out.stdout.strip().splitlines()[0].split(",", 1))
            info.update(name=name, driver=driver)
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    try:
        import torch

        if torch.cuda.is_available():
            info.setdefault("name", torch.cuda.get_device_name())
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    try:
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    return info or None


def jetson_info() -> dict | None:
    """Jetson model (device tree), L4T release and the nvpmodel power mode, on a Jetson."""
    model = _read("/proc/device-tree/model")
    release = _read("/etc/nv_tegra_release")
    if not (model and "jetson" in model.lower()) and not release:
        return None
    power = None
    try:
        out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10)
        power = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"model": model, "l4t_release": release.splitlines()[0] if release else None, "power_mode": power}


def device_fingerprint(threads: int | None = None) -> dict:
    """The whole fingerprint recorded with every measurement."""
    import psutil

    from edgeseg.bundle import tool_versions

    return {"cpu": cpu_info(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "versions": tool_versions(), "threads": threads, "gpu": gpu_info(), "jetson": jetson_info()}
