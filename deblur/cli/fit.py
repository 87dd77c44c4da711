"""``deblur fit-kernel``: learn a causal kernel from blurred and sharp pairs."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.table import Table

from . import console
from ._app import app
from ._common import (
    DEVICE_HELP,
    MAX_PIXELS_HELP,
    check_report_path,
    kernel_files,
    parse_max_pixels,
    parse_size,
    print_results,
    run_interruptible,
)

KERNEL_SUFFIXES = (".npy", ".txt", ".csv")
ANCHOR_CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


def parse_holdout(value: str) -> float:
    """A count of pairs (``2``) or a fraction of them (``0.25``)."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not (number >= 0 and math.isfinite(number)) or (
        number >= 1 and not number.is_integer()
    ):
        raise console.fail(
            f"--holdout {value!r}: give a number of pairs (2) or a fraction of "
            "them below 1 (0.25)"
        )
    return int(number) if number.is_integer() else number


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return "inf" if value == math.inf else f"{value:.2f}"


def scores_table(result, title: str) -> Table:
    """One row per pair: PSNR of the blurred image and of both restorations."""
    table = Table(title=title, title_justify="left")
    table.add_column("set")
    table.add_column("image")
    table.add_column("PSNR blurred", justify="right")
    table.add_column("PSNR lstsq", justify="right")
    table.add_column("PSNR refined", justify="right")
    for label, scores in (("train", result.train), ("held-out", result.holdout)):
        for s in scores:
            table.add_row(
                label,
                s.name,
                _fmt(s.psnr_blurred),
                _fmt(s.psnr_lstsq),
                _fmt(s.psnr_refined),
            )
        if len(scores) > 1:
            table.add_row(
                label,
                "mean",
                *(
                    _fmt(float(np.mean([getattr(s, key) for s in scores])))
                    for key in ("psnr_blurred", "psnr_lstsq", "psnr_refined")
                ),
                style="bold",
            )
    return table


@app.command("fit-kernel")
def fit_kernel_command(
    blurred: Annotated[
        Path,
        typer.Argument(
            help="Blurred image, or a folder of them (searched recursively)."
        ),
    ],
    sharp: Annotated[
        Path,
        typer.Argument(
            help="The sharp image(s), matched to the blurred ones by relative path (extension ignored)."
        ),
    ],
    size: Annotated[
        str,
        typer.Option(
            "--size", "-s", help="Kernel size: 5, or 5x7 for 5 rows by 7 columns."
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Kernel file to write: .npy (or .txt/.csv for a shared kernel), plus a .json sidecar.",
        ),
    ] = Path("kernel.npy"),
    per_channel: Annotated[
        bool,
        typer.Option(
            "--per-channel", help="Learn one kernel per channel, (C, kh, kw)."
        ),
    ] = False,
    anchor: Annotated[
        str,
        typer.Option(
            help="Corner of the kernel holding the anchor tap: bottom-right, bottom-left, top-right or top-left."
        ),
    ] = "bottom-right",
    num_steps: Annotated[
        int,
        typer.Option(
            "--num-steps",
            help="Optimiser steps through the inverse; 0 keeps the least-squares fit.",
        ),
    ] = 100,
    lr: Annotated[
        Optional[float],
        typer.Option(
            help="Learning rate: the first trial step of L-BFGS (default 1), or Adam's peak rate (default 1e-3)."
        ),
    ] = None,
    crop: Annotated[int, typer.Option(help="Side of the random square crops.")] = 64,
    batch: Annotated[int, typer.Option(help="Crops per batch.")] = 16,
    margin: Annotated[
        Optional[int],
        typer.Option(
            help="Rows and columns on the padded side of each crop (the side away from the anchor) left out of the loss (default: the kernel size)."
        ),
    ] = None,
    init: Annotated[
        str,
        typer.Option(help="Start from the least-squares fit (lstsq) or the identity."),
    ] = "lstsq",
    optimizer: Annotated[str, typer.Option(help="lbfgs (default) or adam.")] = "lbfgs",
    holdout: Annotated[
        str,
        typer.Option(
            help="Pairs held out of training and scored apart: a number (2) or a fraction (0.25)."
        ),
    ] = "0",
    seed: Annotated[
        int,
        typer.Option(
            help="Seed of the held-out choice and of the crops; the same seed gives the same kernel."
        ),
    ] = 0,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    threads: Annotated[
        int,
        typer.Option(
            help="CPU threads while fitting (1 suits the small solves of a batch of crops)."
        ),
    ] = 1,
    report: Annotated[
        Optional[Path],
        typer.Option(
            "--report",
            help="Write the per-pair scores and the fit's settings as .json or .csv.",
        ),
    ] = None,
    plot: Annotated[
        Optional[Path],
        typer.Option(
            "--plot", help="Write a PNG of the kernel's heat map beside the loss curve."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing kernel file.")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="No progress bar, table or summary; errors and warnings only.",
        ),
    ] = False,
    max_pixels: Annotated[
        Optional[int], typer.Option("--max-pixels", help=MAX_PIXELS_HELP)
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the log.")
    ] = False,
) -> None:
    """Learn a causal blur kernel from pairs of blurred and sharp images.

    BLURRED and SHARP are two images or two folders; pairs are matched by
    relative path, ignoring the extension.  The kernel starts as the linear
    least-squares fit of the forward blur, then gradient descent through the
    exact inverse refines it on random crops (a margin on the padded side of
    each crop is left out of the loss) while keeping it stable.  A table of
    PSNR per pair (blurred, restored with the least-squares kernel, restored
    with the refined one) goes to stdout, training and --holdout pairs apart.
    The kernel is written with a sidecar recording its anchor and noise gain,
    ready for `deblur restore --kernel`.  Exit codes: 0 done, 1 an output
    could not be written, 2 bad usage or unusable pairs, 130 / 143
    interrupted (nothing written).
    """
    options = {k: v for k, v in locals().items() if k != "verbose"}
    console.setup_logging(verbose)
    run_interruptible(
        _fit, options, stopped="before the kernel was written; nothing written"
    )


def _check_outputs(output: Path, report, plot, overwrite: bool, protected) -> None:
    if output.suffix.lower() not in KERNEL_SUFFIXES:
        raise console.fail(
            f"--output {output}: kernel files are {', '.join(KERNEL_SUFFIXES)}, "
            f"got {output.suffix or 'no extension'!r}"
        )
    if output.is_dir():
        raise console.fail(f"--output {output} is a folder; give a file name")
    if output.resolve() in protected:
        raise console.fail(f"--output {output} is one of the input images")
    if output.exists() and not overwrite:
        raise console.fail(
            f"--output {output} exists; pass --overwrite to replace it, or choose "
            "another name"
        )
    protected = protected | kernel_files(output)
    check_report_path(report, protected)
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise console.fail(f"--plot {plot}: the plot is a PNG, give a .png name")
        if plot.resolve() in protected or (
            report and plot.resolve() == report.resolve()
        ):
            raise console.fail(
                f"--plot {plot} would replace an input, the kernel or the report; "
                "choose another name"
            )
        if plot.exists() and not overwrite:
            raise console.fail(f"--plot {plot} exists; pass --overwrite to replace it")


def _pair_files(blurred: Path, sharp: Path) -> list[tuple[Path, Path, str]]:
    from ..paths import PathError, pair_files

    try:
        return pair_files(blurred, sharp)
    except PathError as exc:
        raise console.fail(str(exc))


def _read_pairs(files, max_pixels):
    """Read the paired images; exit 2 with one line for the first problem.

    Returns the pairs and, by pair name, ``(blurred_path, sharp_path, image)``.
    """
    from ..fit import ImagePair
    from ..imageio import ImageError, read_image

    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels or None}
    pairs, meta = [], {}
    for blurred_path, sharp_path, name in files:
        try:
            b = read_image(blurred_path, **kwargs)
            s = read_image(sharp_path, **kwargs)
        except ImageError as exc:
            raise console.fail(str(exc))
        if b.data.shape != s.data.shape:
            raise console.fail(
                f"{blurred_path} is {_shape(b.data)} but its sharp partner "
                f"{sharp_path} is {_shape(s.data)}; a pair must have the same "
                "size and channels"
            )
        pairs.append(ImagePair(b.data, s.data, name))
        meta[name] = (blurred_path, sharp_path, b)
    return pairs, meta


def _shape(data: np.ndarray) -> str:
    H, W, C = data.shape
    return f"{W}x{H}x{C} (W x H x C)"


def _fit(
    blurred,
    sharp,
    size,
    output,
    per_channel,
    anchor,
    num_steps,
    lr,
    crop,
    batch,
    margin,
    init,
    optimizer,
    holdout,
    seed,
    device,
    threads,
    report,
    plot,
    overwrite,
    quiet,
    max_pixels,
) -> int:
    from ..fit import INITS, OPTIMIZERS, FitError, fit_kernel, split_holdout
    from ..kernel import Kernel, save_kernel
    from ..restore import resolve_device

    # everything that can be checked before reading an image
    kernel_size = parse_size(size)
    fraction = parse_holdout(holdout)
    max_pixels = parse_max_pixels(max_pixels)
    for flag, value, choices in (
        ("--anchor", anchor, ANCHOR_CORNERS),
        ("--init", init, INITS),
        ("--optimizer", optimizer, OPTIMIZERS),
    ):
        if value not in choices:
            hint = (
                "; a centred kernel is not causal, so it cannot be learnt "
                "through the exact inverse"
                if flag == "--anchor" and value in ("center", "centre")
                else ""
            )
            raise console.fail(
                f"{flag} must be one of {', '.join(choices)}, got {value!r}{hint}"
            )
    for flag, value, low in (
        ("--num-steps", num_steps, 0),
        ("--crop", crop, 1),
        ("--batch", batch, 1),
        ("--threads", threads, 1),
        ("--margin", 0 if margin is None else margin, 0),
    ):
        if value < low:
            raise console.fail(f"{flag} must be at least {low}, got {value}")
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise console.fail(f"--lr must be a positive number, got {lr}")
    if per_channel and output.suffix.lower() in (".txt", ".csv"):
        raise console.fail(
            f"--output {output}: a per-channel kernel is 3-D and cannot be written "
            "as text; use a .npy file"
        )
    try:
        dev = resolve_device(device)
    except ValueError as exc:
        raise console.fail(str(exc))

    files = _pair_files(blurred, sharp)
    protected = {p.resolve() for b, s, _ in files for p in (b, s)}
    _check_outputs(output, report, plot, overwrite, protected)
    pairs, meta = _read_pairs(files, max_pixels)
    try:
        train, held = split_holdout(pairs, fraction, seed=seed)
    except FitError as exc:
        raise console.fail(f"--holdout {holdout}: {exc}")

    # the fit, with a progress bar on stderr
    with contextlib.nullcontext() if quiet else console.progress() as bar:
        task = (
            None if bar is None else bar.add_task("fitting", total=num_steps, status="")
        )

        def show(step, loss, psnr):
            if bar is not None:
                status = f"loss {loss:.3g}  PSNR {psnr:.2f} dB"
                bar.update(task, completed=step, status=status)

        try:
            result = fit_kernel(
                train,
                kernel_size,
                per_channel=per_channel,
                anchor=anchor,
                num_steps=num_steps,
                lr=lr,
                crop=crop,
                batch=batch,
                margin=margin,
                init=init,
                optimizer=optimizer,
                seed=seed,
                device=dev,
                holdout=held,
                threads=threads,
                callback=show,
            )
        except FitError as exc:
            raise console.fail(str(exc))
        if bar is not None and len(result.losses) < num_steps:
            bar.update(
                task,
                completed=num_steps,
                status=f"converged after {len(result.losses)} steps",
            )
    for note in result.notes:
        console.warn(note)
    if result.stability.verdict == "marginal":
        console.warn(
            f"the learnt kernel is marginally stable (noise gain "
            f"{result.stability.gain:.3g}); expect noise when restoring 8-bit images"
        )

    # the kernel, then the optional outputs
    kernel = Kernel(result.kernel, anchor, output)
    extra = {
        "source": "deblur fit-kernel",
        "fit": result.settings,
        "lstsq": {
            "gain": _finite(result.stability_lstsq.gain),
            "verdict": result.stability_lstsq.verdict,
        },
        "pairs": {"train": len(train), "holdout": len(held)},
        "steps_run": len(result.losses),
        "selected": result.selected,
    }
    try:
        save_kernel(output, kernel, **extra)
    except (OSError, ValueError) as exc:
        console.error(f"{output}: kernel not written ({exc})")
        return 1
    code = 0
    if report is not None:
        code |= _write_report(report, result, kernel, meta)
    if plot is not None:
        code |= _write_plot(plot, result)

    if not quiet:
        gain = result.stability
        title = (
            f"deblur fit-kernel: {'x'.join(map(str, result.kernel.shape))} kernel, "
            f"anchor {anchor}, noise gain {gain.gain:.3g} ({gain.verdict})"
        )
        print_results(scores_table(result, title))
        console.note(f"kernel written to {output} (metadata in {output.name}.json)")
    return code


def _finite(value: float):
    return value if math.isfinite(value) else None


def _write_report(report: Path, result, kernel, meta) -> int:
    from ..imageio import data_range
    from ..kernel import Kernel
    from ..report import write_report

    records = []
    for label, scores in (("train", result.train), ("holdout", result.holdout)):
        for s in scores:
            blurred_path, sharp_path, image = meta[s.name]
            records.append(
                {
                    "input": str(blurred_path),
                    "reference": str(sharp_path),
                    "set": label,
                    "width": image.width,
                    "height": image.height,
                    "channels": image.channels,
                    "bit_depth": image.bit_depth,
                    "data_range": data_range(image),
                    "psnr_before": s.psnr_blurred,
                    "psnr_lstsq": s.psnr_lstsq,
                    "psnr_after": s.psnr_refined,
                }
            )
    header = {
        "kernel": {
            **kernel.describe(result.stability),
            "weights": result.kernel.tolist(),
        },
        "kernel_lstsq": {
            **Kernel(result.kernel_lstsq, kernel.anchor).describe(
                result.stability_lstsq
            ),
            "weights": result.kernel_lstsq.tolist(),
        },
        "fit": result.settings,
        "losses": result.losses,
        "steps_run": len(result.losses),
        "selected": result.selected,
        "rejected_steps": result.rejected_steps,
        "notes": result.notes,
    }
    try:
        fields = list(records[0]) if records else None
        write_report(report, records, fields=fields, **header)
    except (OSError, ValueError) as exc:
        console.error(f"{report}: report not written ({exc})")
        return 1
    return 0


def _write_plot(plot: Path, result) -> int:
    from ..plots import plot_fit

    losses = [v for v in result.losses if math.isfinite(v)]
    try:
        plot_fit(
            result.kernel,
            losses,
            plot,
            anchor=result.anchor,
            gain=_finite(result.stability.gain),
        )
    except (OSError, ValueError) as exc:
        console.error(f"{plot}: plot not written ({exc})")
        return 1
    return 0
