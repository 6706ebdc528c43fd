"""Connecting to Ray (the ``edgeseg[ray]`` extra): nothing else in edgeseg imports ray, and only when asked."""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

from edgeseg.errors import EdgesegError, UsageError

DEVICE_RESOURCE = "edgeseg-device:"  # + a device class: the custom resource a node advertises (docs/ray.md)


def import_ray():
    """The ray module, or a one-line error naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401  (pyarrow, pandas: the [data] part of the extra)
    except ImportError as exc:
        raise UsageError(f"--ray needs Ray Data: pip install 'edgeseg[ray]' ({exc})") from None
    return ray


@contextlib.contextmanager
def connected(address: str | bool) -> Iterator[object]:
    """Ray, connected for the block: to the instance this process already joined; ``"local"``: a private one on
    this machine; ``"auto"``/True: the cluster of ``RAY_ADDRESS`` or one started here with ``ray start``, else a
    private one; anything else: that cluster's address (``HOST:6379``, ``ray://HOST:10001``). What the block
    started it shuts down after it."""
    ray = import_ray()
    if ray.is_initialized():
        quiet_ray_data(ray)
        yield ray
        return
    address = "auto" if address is True else str(address)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Ray's C++ core logs errors that are not edgeseg's to act on (a Ray Data actor's restart note) on stderr;
    # a real failure still reaches edgeseg as an exception (one line, with where Ray's logs are)
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    kwargs = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    try:
        ray.init(address=None if address == "auto" else address, **kwargs)  # None: RAY_ADDRESS, a local head, or new
    except ConnectionError as exc:
        raise EdgesegError(f"--ray {address}: cannot connect to a Ray cluster there ({exc})") from None
    quiet_ray_data(ray)
    try:
        yield ray
    finally:
        ray.shutdown()


def quiet_ray_data(ray) -> None:
    """edgeseg draws its own progress (one bar across the cluster): Ray Data's bars and plan logs off."""
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # first: turning the bars off logs a warning
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def ray_failure(exc: Exception) -> EdgesegError:
    """A one-line error for a failure inside Ray (a replica that could not start, a lost node)."""
    cause = getattr(exc, "cause", None) or exc
    message = " ".join(str(cause).split())
    if len(message) > 400:
        message = message[:400] + " …"
    return EdgesegError(f"the Ray run failed: {type(cause).__name__}: {message} (Ray's logs: "
                        "/tmp/ray/session_latest/logs on each node)")
