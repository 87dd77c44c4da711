"""Options, checks and the batch loop that several commands share.

A batch command (``restore``, ``blur``) runs :func:`run_batch` inside
:func:`handle_signals` and ends with :func:`summarize`: one bad file never
stops the others, Ctrl-C and SIGTERM stop it cleanly, and the exit code says
what happened (0 all done, 1 some failed, 130/143 interrupted).
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

import typer

from ..kernel import Kernel, KernelError, load_kernel, stability
from ..paths import PathError, Source
from . import console

#: the --kernel option of every command that takes a kernel file
KernelOption = Annotated[
    Path, typer.Option("--kernel", "-k", help="Kernel file: .npy, .txt or .csv.")
]

DEVICE_HELP = "Where to solve: auto (a GPU if torch sees one), cpu or cuda."
ANCHOR_HELP = (
    "Corner of the kernel array holding the anchor tap: bottom-right (default), "
    "bottom-left, top-right, top-left; center for the regularised methods only."
)
MAX_PIXELS_HELP = (
    "Refuse images with more pixels than this before decoding them (a guard "
    "against decompression bombs; default 8192 x 8192 = 67108864); 0 lifts it."
)
SUM_TOLERANCE = 0.05

#: at most this many failures are listed again in the final summary
SUMMARY_FAILURES = 20


class Terminated(BaseException):
    """SIGTERM (or SIGHUP), turned into an exception so a batch can stop cleanly.

    A ``BaseException`` like ``KeyboardInterrupt``, so that no
    ``except Exception`` on the way (a decoder's, a file's) mistakes it for a
    bad file.
    """

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def on_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` (exit 143 after cleaning up)."""

    def handler(signum, frame):
        raise Terminated(signum)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. inside a test runner)
        pass


@contextmanager
def handle_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` while the block runs.

    SIGINT raises ``KeyboardInterrupt`` as Python does by default.  A signal
    that was ignored when the command started (``nohup``, a background job)
    stays ignored.  The previous handlers are put back afterwards.
    """

    def handler(signum, frame):
        raise Terminated(signum)

    saved = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        try:
            if signal.getsignal(signum) is signal.SIG_IGN:
                continue
            saved[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread
            break
    try:
        yield
    finally:
        for signum, previous in saved.items():
            signal.signal(signum, previous)


def quiet_decoders(verbose: bool) -> None:
    """Keep decoders' log messages about a malformed file off stderr.

    tifffile logs a warning per bad tag it meets; the file's one ``error:``
    line already says it is corrupt.  ``--verbose`` shows them.
    """
    import logging

    logging.getLogger("tifffile").setLevel(
        logging.DEBUG if verbose else logging.CRITICAL
    )


def interrupt_code(exc: BaseException) -> int:
    """The exit code for an interruption: 128 + the signal number."""
    if isinstance(exc, Terminated):
        return 128 + exc.signum
    return 130


def interrupt_name(exc: BaseException) -> str:
    return exc.name if isinstance(exc, Terminated) else "SIGINT"


BATCH_STOPPED = "before the batch could finish; every file written is complete"


def run_interruptible(body, options: dict, stopped: str = BATCH_STOPPED) -> None:
    """Run a command's ``body(**options)`` under the signal handlers.

    Ctrl-C, SIGTERM and SIGHUP end it with one line, ``interrupted by <signal>
    <stopped>``, and exit 128 + the signal's number; otherwise the exit code is
    the one ``body`` returns.
    """
    with handle_signals():
        try:
            code = body(**options)
        except (KeyboardInterrupt, Terminated) as exc:
            console.error(f"interrupted by {interrupt_name(exc)} {stopped}")
            raise typer.Exit(interrupt_code(exc))
    if code:
        raise typer.Exit(code)


# ----------------------------------------------------------------------------
# the batch loop


@dataclass
class Job:
    """One input of a batch: its source, its output and the work to do."""

    source: Source
    target: Path
    work: Callable[[], dict]


@dataclass
class Batch:
    """What a batch did: the records, and whether and how it stopped early."""

    total: int
    results: list[dict] = field(default_factory=list)
    interrupted: BaseException | None = None
    current: str | None = None  # the input in progress when interrupted
    stopped: bool = False  # --fail-fast

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if r.get("error")]

    @property
    def done(self) -> int:
        return len(self.results) - len(self.failed)

    @property
    def not_started(self) -> int:
        return self.total - len(self.results) - (self.current is not None)


def run_batch(
    jobs: Sequence[Job],
    *,
    fail_fast: bool = False,
    label: str = "working",
    on_record: Callable[[dict], None] | None = None,
) -> Batch:
    """Run ``jobs`` one after the other; stop early only on --fail-fast or a signal.

    A failed record's ``error`` is printed as one ``error:`` line as soon as
    it happens; ``on_record`` sees every record (notes, a result line).  An
    interruption is caught and recorded: the record of the file in progress
    is kept when its output was already complete.
    """
    batch = Batch(total=len(jobs))
    with console.progress() as bar:
        task = bar.add_task(label, total=len(jobs), status="")
        try:
            for job in jobs:
                batch.current = str(job.source.path)
                record = job.work()
                batch.current = None
                batch.results.append(record)
                if on_record is not None:
                    on_record(record)
                if record.get("error"):
                    console.error(record["error"])
                    if fail_fast:
                        batch.stopped = True
                        break
                bar.update(task, advance=1, status=job.source.relative.name)
        except (KeyboardInterrupt, Terminated) as exc:
            batch.interrupted = exc
            partial = getattr(exc, "record", None)
            if partial is not None and partial.get("output"):
                batch.results.append(partial)
                batch.current = None
    return batch


def summarize(batch: Batch, verb: str, out: Path, report: Path | None = None) -> int:
    """Print the batch's summary on stderr and return its exit code."""
    failed = batch.failed
    where = f" (each is a row of {report})" if report is not None else ""
    if failed and batch.total > 1:
        console.error(f"{len(failed)} of {batch.total} images failed{where}:")
        for r in failed[:SUMMARY_FAILURES]:
            console.note(f"  {r['error']}")
        if len(failed) > SUMMARY_FAILURES:
            console.note(f"  ... and {len(failed) - SUMMARY_FAILURES} more")
    elif failed:
        console.error(f"1 of 1 images failed{where}")
    if batch.stopped:
        console.error(
            f"stopped at the first failure (--fail-fast): {batch.not_started} of "
            f"{batch.total} images not started"
        )
    if batch.interrupted is not None:
        now = (
            f"; {batch.current} was in progress, nothing written for it"
            if batch.current
            else ""
        )
        console.error(
            f"interrupted by {interrupt_name(batch.interrupted)}: {batch.done} of "
            f"{batch.total} images {verb}, {len(failed)} failed, "
            f"{batch.not_started} not started{now}; every file written is complete"
        )
        return interrupt_code(batch.interrupted)
    if not failed and not batch.stopped:
        console.note(f"{batch.done} of {batch.total} images {verb} into {out}")
    return 1 if failed else 0


def status(batch: Batch) -> dict:
    """The batch's state for a report header."""
    doc = {
        "total": batch.total,
        "done": batch.done,
        "failed": len(batch.failed),
        "not_started": batch.not_started,
        "stopped_by": None,
    }
    if batch.interrupted is not None:
        doc["stopped_by"] = interrupt_name(batch.interrupted)
        doc["in_progress"] = batch.current
    elif batch.stopped:
        doc["stopped_by"] = "--fail-fast"
    return doc


def print_results(renderable) -> None:
    """Print on stdout; a closed pipe (``| head``) is not an error."""
    try:
        console.out.print(renderable)
        if sys.stdout is not None:
            sys.stdout.flush()
    except (BrokenPipeError, OSError, AttributeError, ValueError):
        # stdout closed, gone or full: the results are in the files and the
        # report; silence the flush at exit as well
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, AttributeError, ValueError):
            pass


# ----------------------------------------------------------------------------
# checks before any work


def open_kernel(
    path: Path,
    anchor: str | None,
    *,
    normalize: bool = False,
    force: bool = False,
    exact: bool = True,
) -> tuple[Kernel, object]:
    """Load, check and describe a kernel for a command; exit 2 if unusable.

    ``exact`` means the exact inverse will use it: a centred anchor is refused
    and an unstable kernel too, unless ``force``.  A kernel whose taps do not
    sum to one is used as it is, with a warning, unless ``normalize``; either
    way the kernel's ``notes`` say so (they go into reports).
    """
    try:
        kernel = load_kernel(path, anchor)
        sums = kernel.sums
        shown = ", ".join(f"{s:.6g}" for s in sums)
        off = any(abs(s - 1.0) > SUM_TOLERANCE for s in sums)
        if normalize:
            kernel = kernel.normalized()
            kernel = replace(
                kernel, notes=(*kernel.notes, f"normalized: taps summed to {shown}")
            )
        elif off:
            kernel = replace(
                kernel,
                notes=(*kernel.notes, f"taps sum to {shown}, not 1; not rescaled"),
            )
    except KernelError as exc:
        raise console.fail(str(exc))
    if off and not normalize:
        console.warn(
            f"{path}: kernel taps sum to {shown}, not 1, so the restored image "
            "changes brightness; pass --normalize to rescale the kernel"
        )
    verdict = stability(kernel)
    if exact and kernel.anchor == "center":
        raise console.fail(
            f"{path}: the kernel's anchor is its centre: a centred blur is not "
            "causal and its exact inverse is unstable (noise gain "
            f"{verdict.gain:.3g} read from a corner); use --method wiener, "
            "unsupervised-wiener or richardson-lucy for it"
        )
    if exact and verdict.verdict == "unstable":
        from ..kernel import _corner_hint

        message = (
            f"{path}: kernel is unstable for the exact inverse (noise gain "
            f"{verdict.gain:.3g}): {_corner_hint(kernel)}; or pass --force to "
            "restore anyway"
        )
        if not force:
            raise console.fail(message)
        console.warn(message.replace("; or pass --force to restore anyway", ""))
    elif exact and verdict.verdict == "marginal":
        console.warn(
            f"{path}: kernel is marginally stable (noise gain {verdict.gain:.3g}, "
            "the impulse response does not decay): expect noise on quantised "
            "input; 16-bit input or a regularised --method does better"
        )
    return kernel, verdict


def kernel_header(kernel: Kernel, verdict) -> dict:
    """The kernel's entry in a report: shape, anchor, sum, gain, and its notes."""
    return {**kernel.describe(verdict), "notes": list(kernel.notes)}


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise console.fail(f"--out {out} is a file; give a folder for the outputs")


def check_report_path(report: Path | None, protected: set[Path]) -> None:
    """Refuse a report path that cannot work before any image is done."""
    if report is None:
        return
    if report.suffix.lower() not in (".json", ".csv"):
        raise console.fail(
            f"--report {report}: the format is chosen by extension, got "
            f"{report.suffix or 'none'!r}; use .json or .csv"
        )
    if report.is_dir():
        raise console.fail(f"--report {report} is a folder; give a file name")
    if report.resolve() in protected:
        raise console.fail(
            f"--report {report} would replace a file this run reads or writes "
            "(an input, a reference, the kernel or another output); choose another name"
        )
    for parent in report.parents:
        if parent.exists():
            if not parent.is_dir():
                raise console.fail(
                    f"--report {report}: {parent} is a file, not a folder"
                )
            break


def parse_bit_depth(value: str) -> str | int:
    if value in ("same", "float32"):
        return value
    if value in ("8", "16"):
        return int(value)
    raise console.fail(f"--bit-depth must be same, 8, 16 or float32, got {value!r}")


def parse_max_pixels(value: int | None) -> int | None:
    if value is not None and value < 0:
        raise typer.BadParameter(
            f"got {value}; give a number of pixels, or 0 for no limit",
            param_hint="--max-pixels",
        )
    return value


def check_depth_fits(sources: Sequence[Source], depth) -> None:
    """Refuse 16-bit outputs for JPEG and BMP inputs before doing any work."""
    if depth != 16:
        return
    eight = [s for s in sources if s.path.suffix.lower() in (".jpg", ".jpeg", ".bmp")]
    if eight:
        more = f" and {len(eight) - 1} more" if len(eight) > 1 else ""
        raise console.fail(
            f"--bit-depth 16 cannot be stored in {eight[0].path.name}{more}: JPEG "
            "and BMP hold 8 bits; use --bit-depth float32 (writes TIFF) or same"
        )


def plan_outputs(
    sources: Sequence[Source], out: Path, suffix: str | None
) -> tuple[list[Path], set[Path]]:
    """Each source's output path; exit 2 if two sources share one.

    Also returns the resolved paths of every input, which no output may
    replace.
    """
    from ..paths import output_targets

    try:
        targets = output_targets(sources, out, suffix)
    except PathError as exc:
        raise console.fail(str(exc))
    return targets, {s.path.resolve() for s in sources}


def skip_outputs(
    sources: list[Source], out: Path, inputs: Sequence[str]
) -> list[Source]:
    """Leave out images found under --out when --out lies inside an input folder.

    ``restore photos/ --out photos/restored`` run twice must not restore the
    first run's outputs; files named one by one are always kept.
    """
    from ..paths import glob_root, is_under

    named = set()
    folders = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            folders.append(path)
        elif path.exists():
            named.add(path.resolve())
        else:
            folders.append(glob_root(str(item)))
    inside = any(is_under(out, f) and out.resolve() != f.resolve() for f in folders)
    if not inside:
        return sources
    kept = [
        s for s in sources if s.path.resolve() in named or not is_under(s.path, out)
    ]
    if len(kept) < len(sources):
        skipped = len(sources) - len(kept)
        console.note(
            f"note: skipped {skipped} image(s) under --out {out} (outputs of an "
            "earlier run)"
        )
        if not kept:
            raise console.fail(
                f"every input lies under --out {out}; give another --out folder"
            )
    return kept


def guard_target(source: Source, target: Path, protected: set[Path]) -> str | None:
    """Why ``target`` cannot be written for ``source``, or ``None``."""
    resolved = target.resolve()
    if resolved in protected and resolved != source.path.resolve():
        return (
            f"{target}: output would overwrite {target}, an input or reference "
            "of this run; choose another --out"
        )
    for parent in reversed(target.parents):
        if parent.exists() and not parent.is_dir():
            return f"{target}: cannot create the output folder: {parent} is a file"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return (
            f"{target}: cannot create the output folder {target.parent} "
            f"({exc.strerror or exc})"
        )
    return None


def parse_size(
    value: str, option: str = "--size", example: str = "5 or 5x7"
) -> tuple[int, int]:
    """``"5"`` -> ``(5, 5)``; ``"5x7"`` -> ``(5, 7)`` (rows x columns); exit 2 otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", value)
    if not match or int(match[1]) < 1 or int(match[2] or match[1]) < 1:
        raise console.fail(
            f"{option} {value!r}: give a positive size such as {example} (rows x columns)"
        )
    return int(match[1]), int(match[2] or match[1])


def kernel_files(path: Path) -> set[Path]:
    """The kernel file and its sidecar, resolved: no output may replace them."""
    return {path.resolve(), path.with_name(path.name + ".json").resolve()}
