"""Temporary files and folders edgeseg writes, named so that a later run can tell whose they are.

Every temporary path edgeseg creates (atomic file writes, bundle staging folders, work and latency folders
in the temp dir) carries the writing process's pid, start time and host:
``<stem>.edgeseg-<pid>-<start>-<host>-<random>[<suffix>]``; a folder also holds a marker file
(``.edgeseg-temp``). A process killed with SIGKILL cannot clean up after itself; the next run calls
:func:`sweep_stale` on the folders it writes to, which removes exactly those paths: the whole name must be
one edgeseg makes, its process (on this host) must be gone — or, written on another host sharing the folder,
untouched for a day — and a folder must carry the marker or be empty. Nothing else is ever removed.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

# the whole name: stem, tag, mkstemp's 8 random characters, the file's suffix (the stem may itself hold dots)
_NAME = re.compile(r"(?P<stem>.+)\.edgeseg-(?P<pid>\d{1,10})-(?P<start>\d{1,20})-(?P<host>[0-9a-f]{8})-"
                   r"[a-z0-9_]{8}(?P<suffix>(\.[A-Za-z0-9]{1,8}){0,2})")
MARKER = ".edgeseg-temp"          # inside every temporary folder: the proof a folder is edgeseg's to remove
ELSEWHERE_STALE_SECONDS = 86400   # a temporary of another host (a shared folder) is stale after a day untouched


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name (state first), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)  # /proc mounted hidepid: another user's live process is only seen this way
        except PermissionError:
            pass
        except OSError:
            return None
        return ["?"] + ["0"] * 19  # alive, start time unknown
    return stat.rsplit(")", 1)[1].split()


def _process_start(pid: int) -> int | None:
    """A stable start stamp of a live process (None when it is not running; a zombie is not running)."""
    if Path("/proc").is_dir():
        fields = _stat_fields(pid)
        return None if fields is None or fields[0] in ("Z", "X") else int(fields[19])  # field 22: start time
    try:
        import psutil

        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else int(process.create_time() * 100)
    except ImportError:
        return 0  # cannot tell: alive (a temporary is kept rather than a live run's removed)
    except Exception as exc:  # NoSuchProcess: gone; AccessDenied: alive, another user's
        return 0 if type(exc).__name__ == "AccessDenied" else None


def _host() -> str:
    """This machine and pid namespace: containers that share a host name (``--net=host``) see each other's pids
    as gone, so their temporaries must not look like one host's."""
    import hashlib
    import socket

    where = [socket.gethostname()]
    for probe in (lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                  lambda: str(os.stat("/proc/self/ns/pid").st_ino)):
        try:
            where.append(probe())
        except OSError:
            pass
    return hashlib.sha256("|".join(where).encode()).hexdigest()[:8]


def owner_tag() -> str:
    """``.edgeseg-<pid>-<start>-<host>-``: the prefix of this process's temporary names (random part appended)."""
    return f".edgeseg-{os.getpid()}-{_process_start(os.getpid()) or 0}-{_host()}-"


def temp_dir(prefix: str, parent: str | Path | None = None) -> Path:
    """A new folder ``<prefix>.edgeseg-<pid>-<start>-<host>-<random>`` in ``parent`` (default: the temp dir),
    holding only edgeseg's marker."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}", dir=parent))
    mark(path)
    return path


def temp_name(prefix: str, parent: str | Path) -> Path:
    """A fresh temporary name in ``parent`` (nothing created), for a folder renamed there then :func:`mark` ed."""
    import secrets

    return Path(parent) / f"{prefix}{owner_tag()}{secrets.token_hex(4)}"


def mark(folder: Path) -> None:
    """Mark ``folder`` as an edgeseg temporary that a later run may remove once its process is gone."""
    (Path(folder) / MARKER).touch()


@contextlib.contextmanager
def work_dir(prefix: str):
    """A private temporary folder in the temp dir for the duration of a ``with`` block (removed after it);
    stale ones of killed edgeseg processes are swept first."""
    sweep_stale()
    path = temp_dir(prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def temp_file(prefix: str, suffix: str, parent: str | Path) -> Path:
    """A new empty file ``<prefix>.edgeseg-<pid>-<start>-<host>-<random><suffix>`` in ``parent``."""
    fd, name = tempfile.mkstemp(prefix=f"{prefix}{owner_tag()}", suffix=suffix, dir=parent)
    os.close(fd)
    return Path(name)


def is_stale(path: Path, prefix: str | tuple[str, ...] | None = None) -> bool:
    """True when ``path`` is named as an edgeseg temporary (whose stem starts with ``prefix``, or one of them, when
    given) and its writing process is gone: on this host by its pid and start time, on another by a day untouched."""
    match = _NAME.fullmatch(path.name)
    if (match is None or not match["stem"].endswith(match["suffix"])  # a file's temp repeats its extension
            or (prefix is not None and not match["stem"].startswith(prefix))):
        return False
    if match["host"] != _host():
        try:
            import time

            return time.time() - path.lstat().st_mtime > ELSEWHERE_STALE_SECONDS
        except OSError:
            return False
    pid, start = int(match["pid"]), int(match["start"])
    alive_start = _process_start(pid)  # 0: alive, start time unknown
    return alive_start is None or (start != 0 and alive_start not in (0, start))  # gone, or the pid was reused


def _remove(path: Path) -> bool:
    """Remove a stale temporary: a file or link; a folder only when it carries the marker, or is empty."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return True
    if (path / MARKER).is_file() and not (path / MARKER).is_symlink():
        shutil.rmtree(path)
        return True
    try:
        path.rmdir()  # empty: a run killed before it marked its folder
        return True
    except OSError:
        return False  # named like ours, but not provably ours: left alone


def sweep_stale(folder: str | Path | None = None, prefix: str | tuple[str, ...] | None = None) -> list[Path]:
    """Remove the stale edgeseg temporaries directly inside ``folder`` (default: the temp dir), only those of
    ``prefix`` (e.g. ``.report.json``) when given; returns them. See the module docstring for the rules."""
    folder = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for path in entries:
        try:
            if is_stale(path, prefix) and _remove(path):
                removed.append(path)
        except OSError:
            pass  # another process swept it first, or no permission: leave it
    return removed
