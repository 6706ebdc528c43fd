"""The ``edgeseg`` command line: a thin Typer layer over the library API.

``app.py`` holds the Typer app, the global options, the logging setup and the error → exit-code table; each
other module is one group of commands and imports only ``app`` and the library. Importing this package
imports the groups, which registers their commands.
"""
# the order of registration is the order of `edgeseg --help`
# isort: off
from edgeseg.cli import train, importing, demo, deploy, bundle, bench, explain, gate, infer, tuning  # noqa: F401
# isort: on
from edgeseg.cli.app import app, main

__all__ = ["app", "main"]
