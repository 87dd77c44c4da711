"""Options and checks that several commands share."""

from __future__ import annotations

import signal
from pathlib import Path

import typer

from ..kernel import Kernel, KernelError, load_kernel, stability
from . import console

DEVICE_HELP = "Where to solve: auto (a GPU if torch sees one), cpu or cuda."
ANCHOR_HELP = (
    "Corner of the kernel array holding the anchor tap: bottom-right (default), "
    "bottom-left, top-right, top-left; center for the regularised methods only."
)
SUM_TOLERANCE = 0.05


class Terminated(Exception):
    """SIGTERM, turned into an exception so a batch can stop cleanly."""


def on_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` (exit 143 after cleaning up)."""

    def handler(signum, frame):
        raise Terminated()

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. inside a test runner)
        pass


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
    and an unstable kernel too, unless ``force``.
    """
    try:
        kernel = load_kernel(path, anchor)
        if normalize:
            kernel = kernel.normalized()
    except KernelError as exc:
        raise console.fail(str(exc))
    sums = kernel.sums
    if not normalize and any(abs(s - 1.0) > SUM_TOLERANCE for s in sums):
        shown = ", ".join(f"{s:.4g}" for s in sums)
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


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise console.fail(f"--out {out} is a file; give a folder for the outputs")


def parse_bit_depth(value: str) -> str | int:
    if value in ("same", "float32"):
        return value
    if value in ("8", "16"):
        return int(value)
    raise typer.BadParameter(
        f"got {value!r}; choose same, 8, 16 or float32", param_hint="--bit-depth"
    )
