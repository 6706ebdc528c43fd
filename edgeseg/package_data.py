"""Where the target profiles and calibration recipes that ship with edgeseg are.

The top-level ``export/`` (profiles) and ``calibration/`` (recipes) folders of the source tree are the one copy:
a wheel carries them inside the package as ``edgeseg/_profiles`` and ``edgeseg/_recipes`` (``package-dir`` in
``pyproject.toml``); an editable install, or a checkout on ``PYTHONPATH``, reads them where they are.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
INSTALLED_AS = {"export": "_profiles", "calibration": "_recipes"}


def shipped_folder(folder: str) -> Path | None:
    """The shipped ``export`` or ``calibration`` folder: inside the installed package, else the checkout's
    top-level one; None when neither exists (a broken install)."""
    installed = PACKAGE / INSTALLED_AS[folder]
    if installed.is_dir():
        return installed
    checkout = PACKAGE.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / folder).is_dir():
        return checkout / folder
    return None
