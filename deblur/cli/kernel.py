"""``deblur kernel show`` and ``deblur kernel make``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.table import Table

from ..kernel import (
    KERNEL_KINDS,
    KernelError,
    load_kernel,
    make_kernel,
    save_kernel,
    stability,
)
from . import console
from ._app import app
from ._common import ANCHOR_HELP, kernel_files, parse_size

kernel_app = typer.Typer(help="Inspect and make blur kernels.", no_args_is_help=True)
app.add_typer(kernel_app, name="kernel")


@kernel_app.command("show")
def show(
    path: Annotated[Path, typer.Argument(help="Kernel file: .npy, .txt or .csv.")],
    anchor: Annotated[Optional[str], typer.Option(help=ANCHOR_HELP)] = None,
    plot: Annotated[
        Optional[Path],
        typer.Option(help="Draw the kernel as a heat map into this PNG."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --plot file.")
    ] = False,
) -> None:
    """Print a kernel's shape, anchor, sum, noise gain and stability verdict."""
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise console.fail(f"--plot {plot}: the picture is a PNG, give a .png name")
        if plot.resolve() in kernel_files(path):
            raise console.fail(
                f"--plot {plot} would replace the kernel; choose another name"
            )
        if plot.exists() and not overwrite:
            raise console.fail(f"--plot {plot} exists; pass --overwrite to replace it")
    try:
        k = load_kernel(path, anchor)
    except KernelError as exc:
        raise console.fail(str(exc))
    s = stability(k)
    table = Table(show_header=False, title=str(path), title_justify="left")
    table.add_row("shape", "x".join(map(str, k.shape)))
    table.add_row("form", k.form.value)
    table.add_row(
        "anchor", f"{k.anchor} {k.anchor_index}" if k.anchor_index else k.anchor
    )
    table.add_row("anchor tap", ", ".join(f"{v:.6g}" for v in k.anchor_values) or "-")
    table.add_row("sum", ", ".join(f"{v:.6g}" for v in k.sums))
    table.add_row("noise gain", f"{s.gain:.4g}")
    table.add_row("verdict", s.verdict)
    console.out.print(table)
    with np.printoptions(precision=4, suppress=True, linewidth=100):
        console.out.print(str(k.weights), markup=False)
    if plot is not None:
        from ..plots import plot_kernel

        plot_kernel(k.weights, plot, anchor=k.anchor, gain=s.gain)
        console.note(f"wrote {plot}")


@kernel_app.command("make")
def make(
    kind: Annotated[str, typer.Argument(help=f"One of {', '.join(KERNEL_KINDS)}.")],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Where to write the kernel (.npy, .txt, .csv)."
        ),
    ],
    size: Annotated[str, typer.Option(help="N or HxW.")] = "5",
    ratio: Annotated[
        float,
        typer.Option(help="Decay of the taps from the anchor (diagonal, motion)."),
    ] = 0.6,
    sigma: Annotated[
        float, typer.Option(help="Width of the Gaussian (corner-gaussian, gaussian).")
    ] = 1.0,
    anchor: Annotated[str, typer.Option(help=ANCHOR_HELP)] = "bottom-right",
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
) -> None:
    """Make a synthetic kernel (normalised to sum one) and write it with its anchor."""
    kh, kw = parse_size(size)
    if output.is_dir():
        raise console.fail(
            f"-o {output} is a folder; give a kernel file name such as {output / 'kernel.npy'}"
        )
    if output.exists() and not overwrite:
        raise console.fail(f"{output}: exists; pass --overwrite to replace it")
    try:
        k = make_kernel(kind, (kh, kw), ratio=ratio, sigma=sigma, anchor=anchor)
        save_kernel(output, k)
    except (KernelError, ValueError, OSError) as exc:
        raise console.fail(str(exc))
    s = stability(k)
    shape = "x".join(map(str, k.shape))
    console.out.print(
        f"{output}: {kind} {shape}, anchor {k.anchor}, gain {s.gain:.4g} ({s.verdict})"
    )
