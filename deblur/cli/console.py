"""The terminal: results on stdout, progress, warnings and errors on stderr.

All rich objects live here so that the rest of the CLI only calls these.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)


# results go to stdout; when it is a file or a pipe, tables get room to breathe
class _Guarded:
    """A stream that falls silent when writing fails (stdout full or closed).

    The results are in the output files and the report; a table that cannot
    be shown is not a reason to fail the run or print a traceback.
    """

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            self._silence()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self._silence()

    def _silence(self):
        # send the rest, and the flush at exit, to /dev/null
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


if sys.stdout is None:  # started with stdout closed (`deblur ... >&-`)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
if sys.stderr is None:
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115
if not isinstance(sys.stdout, _Guarded):
    sys.stdout = _Guarded(sys.stdout)
out = Console(highlight=False, soft_wrap=True)
if not out.is_terminal:
    out = Console(highlight=False, soft_wrap=True, width=200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def error(message: str) -> None:
    """Print one line ``error: ...`` on stderr."""
    err.print(f"[bold red]error:[/] {escape(message)}")


def warn(message: str) -> None:
    """Print one line ``warning: ...`` on stderr."""
    err.print(f"[yellow]warning:[/] {escape(message)}")


def note(message: str) -> None:
    err.print(escape(message))


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as one error line and return the exit to raise."""
    error(message)
    return typer.Exit(code)


def interactive() -> bool:
    """True when stderr is a terminal (progress bars on)."""
    return err.is_terminal


def setup_logging(verbose: bool) -> None:
    """Route library warnings to one stderr line each; ``--verbose`` shows the log."""
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(
        level=level,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=err, show_time=False, show_path=False)],
        force=True,
    )

    def show(message, category, filename, lineno, file=None, line=None):
        warn(str(message))

    warnings.showwarning = show


def progress(description: str = "") -> Progress:
    """A progress bar on stderr, off when stderr is not a terminal."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=err,
        disable=not interactive(),
        transient=False,
    )
