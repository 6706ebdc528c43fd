"""The ``edgeseg`` Typer app and what every command shares: the global options (``--version``, ``-v``, ``-q``),
the logging setup, the error → exit-code table, the choice types and the small parsers of option values.

Each command group (``edgeseg/cli/<group>.py``) imports this module and the library, never another group;
``edgeseg/cli/__init__.py`` imports the groups, which registers their commands on :data:`app`.
"""
from __future__ import annotations

import enum
import functools
import json
import logging
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # typer ≥ 0.24 vendors click
    from typer._click.exceptions import UsageError as ClickUsageError
except ImportError:  # pragma: no cover — older typer on click
    from click.exceptions import UsageError as ClickUsageError

from edgeseg import __version__
from edgeseg.errors import EdgesegError, Incomplete, InputError, LimitBroken, UsageError, VerificationError
from edgeseg.validation import JSON_ERRORS

# ── exit codes: the one table (docs/cli.md) ───────────────────────────────────────────────────────────────────
EXIT_OK = 0
EXIT_USAGE = 64  # sysexits.h EX_USAGE; not Click's 2, which edgeseg has documented for unusable input since its gate
EXIT_CODES: dict[type[EdgesegError], int] = {
    LimitBroken: 1,        # a Dice/latency limit broken: the gate failed
    UsageError: EXIT_USAGE,  # option values that cannot work (alone or together), and Click's own usage errors
    InputError: 2,         # unusable input: data, checkpoint, bundle manifest, results, baseline; nothing written
    EdgesegError: 2,       # any other user-facing error
    VerificationError: 3,  # an integrity check failed (sha256, manifest digest, links, external data)
    Incomplete: 4,         # results written, but something asked for not done (bench: not measured; compress: missed)
}
# a command's own check failed and it printed which: the gate (a limit broken), infer (inputs that failed),
# verify (listed files that failed) — the code of LimitBroken, kept from before this table
EXIT_FAILED = EXIT_CODES[LimitBroken]
EXIT_NEEDS_FULL_INSTALL = EXIT_CODES[InputError]  # a command needing torch & co. on the runtime-only install


class _Group(TyperGroup):
    """Click's usage errors (an unknown option, a value outside a choice, a missing argument) exit with
    :data:`EXIT_USAGE`, like edgeseg's own :class:`UsageError`, so a script can tell them from unusable input."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except ClickUsageError as exc:
            exc.exit_code = EXIT_USAGE
            raise

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ClickUsageError as exc:  # raised while a sub-command parses its options
            exc.exit_code = EXIT_USAGE
            raise


app = typer.Typer(cls=_Group, help="Compress medical segmentation models for edge devices and measure what it cost.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(cls=_Group, help="Datasets: synthetic phantoms.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def exit_code(error: EdgesegError | type[EdgesegError]) -> int:
    """The exit code of an error (or error class): the nearest class of the table in its MRO."""
    cls = error if isinstance(error, type) else type(error)
    return next(EXIT_CODES[c] for c in cls.__mro__ if c in EXIT_CODES)


def user_errors(fn):
    """Turn an :class:`EdgesegError` into one line on stderr and the exit code of its class (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgesegError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exit_code(exc)) from None

    return wrapper


# ── logging: the library logs to the "edgeseg" logger, the CLI shows it on stderr ─────────────────────────────
LOGGER = "edgeseg"


class ConsoleHandler(logging.Handler):
    """Records of the ``edgeseg`` loggers on stderr, through the console the progress bars draw on (a line logged
    while a bar runs appears above it): the message alone at INFO and DEBUG, ``warning: …`` / ``error: …`` above.
    Text is printed as is; Rich markup only for a record logged with ``extra={"markup": True}``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from edgeseg.progress import console

            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                text = f"{record.levelname.lower()}: {text}"
            console.print(text, markup=bool(getattr(record, "markup", False)), highlight=False)
        except Exception:  # a broken stream must not stop the command
            self.handleError(record)


def setup_logging(level: int = logging.INFO) -> None:
    """Show the ``edgeseg`` logger's records from ``level`` up (once per process: a second call replaces the
    handler, so repeated in-process invocations print each line once)."""
    logger = logging.getLogger(LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(ConsoleHandler())
    logger.setLevel(level)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"edgeseg {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
        version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                              help="Print the version and exit.")] = False,
        verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Show debug messages too.")] = False,
        quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Show only warnings and errors (no progress "
                                                                  "messages; results still print).")] = False):
    """Compress medical segmentation models for edge devices and measure what it cost."""
    if verbose and quiet:
        typer.echo("error: pass at most one of --verbose and --quiet", err=True)
        raise typer.Exit(exit_code(UsageError))
    setup_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


# ── choices: Enums, so --help lists them and the shell completes them (the library takes the .value) ─────────
def choices(name: str, values: tuple[str, ...]) -> type[enum.Enum]:
    """A ``str`` Enum of ``values`` (member names with ``_`` for ``-``); tests/test_cli_house.py checks each one
    against the library constant it mirrors (not imported here: the CLI starts without torch & co.)."""
    return enum.Enum(name, {v.replace("-", "_"): v for v in values}, type=str)


Split = choices("Split", ("train", "val", "all", "test"))
Strategy = choices("Strategy", ("stratified", "random"))                            # calibration.STRATEGIES
Normalization = choices("Normalization", ("zscore", "minmax", "ct_window", "none"))  # preprocessing.FLAG_NORMALIZATIONS
Resize = choices("Resize", ("resize", "pad"))                                       # preprocessing.FLAG_RESIZE_MODES
Flip = choices("Flip", ("x", "y", "xy", "none"))
Amp = choices("Amp", ("auto", "bf16", "off"))
Precision = choices("Precision", ("int8", "fp16", "fp32"))                          # targets.profiles.PRECISIONS
CalibMethod = choices("CalibMethod", ("minmax", "entropy", "percentile"))  # onnxruntime_backend.CALIBRATION_METHODS
GateMode = choices("GateMode", ("auto", "workload", "reference", "absolute", "runtime_fp32"))  # "auto" + gate MODES
Metric = choices("Metric", ("p50", "p90"))
SensitivityMode = choices("SensitivityMode", ("quantize-one", "float-one"))         # tuning.sensitivity.MODES


def value(choice: Any) -> Any:
    """An Enum choice as the plain string the library takes (None and strings pass through)."""
    return choice.value if isinstance(choice, enum.Enum) else choice


# ── shared options ─────────────────────────────────────────────────────────────────────────────────────────────
def force_option(help: str) -> Any:
    """``--force``: one flag, no ``--no-force`` twin."""
    return typer.Option(False, "--force", help=help)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (and nothing else "
                                                       "there; messages go to stderr).")]
ArchArgs = Annotated[list[str], typer.Option(help="Architecture keyword, KEY=VALUE (repeatable).")]


def print_json(document: Any) -> None:
    """A --json result on stdout, as edgeseg writes its JSON files."""
    typer.echo(json.dumps(document, indent=1, default=str))


def say(text: str, json_mode: bool = False) -> None:
    """A line for the reader: on stdout, or on stderr when stdout carries the --json result."""
    typer.echo(text, err=json_mode)


def result_console(json_mode: bool = False):
    """Where result tables go: stdout's console, or stderr's when stdout carries the --json result."""
    from edgeseg.progress import console as stderr_console
    from edgeseg.report import console as stdout_console

    return stderr_console if json_mode else stdout_console


def split_list(values: list[str]) -> list[str]:
    """``["onnx,openvino", "tensorrt"]`` → ``["onnx", "openvino", "tensorrt"]`` (repeatable, comma-separated)."""
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def parse_kwargs(pairs: list[str]) -> dict:
    """``["base=16", "fusion=cross_attention"]`` → ``{"base": 16, "fusion": "cross_attention"}`` (JSON values)."""
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--arch-arg expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(text)
        except JSON_ERRORS:  # not JSON (or a number beyond Python's digit limit): the text itself
            out[key] = text
    return out


def print_scores(result: dict) -> None:
    """Per-label Dice and IoU of an evaluation as a table (on stderr, as before)."""
    from rich.table import Table

    from edgeseg.progress import console

    table = Table(title=f"{result.get('dataset', '')} · {result.get('split', '')} · {result['num_cases']} cases")
    table.add_column("label")
    table.add_column("Dice", justify="right")
    table.add_column("IoU", justify="right")
    for label, s in result["mean"].items():
        table.add_row(label, f"{s['dice']:.4f}", f"{s['iou']:.4f}")
    console.print(table)


def command_line() -> str:
    """The command as typed (recorded in checkpoints and results)."""
    import shlex

    return shlex.join(["edgeseg", *sys.argv[1:]])


# ── the entry point ────────────────────────────────────────────────────────────────────────────────────────────
FULL_INSTALL_MODULES = {"torch", "torch_pruning", "nncf", "onnx", "onnxscript", "matplotlib", "jsonschema"}


def main() -> None:
    """``edgeseg`` (the console script) and ``python -m edgeseg``."""
    import signal

    # a plain `kill` raises SystemExit, so staging directories and temp files are cleaned up like on Ctrl-C
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        app()
    except ModuleNotFoundError as exc:  # e.g. `compress` on the runtime-only install (no torch)
        if exc.name and exc.name.split(".")[0] in FULL_INSTALL_MODULES:
            typer.echo(f"error: this command needs {exc.name.split('.')[0]}, which the runtime-only install lacks; "
                       "pip install 'edgeseg[full]' (edgeseg infer, verify and gate work without it)", err=True)
            sys.exit(EXIT_NEEDS_FULL_INSTALL)
        raise


