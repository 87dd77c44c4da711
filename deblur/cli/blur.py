"""``deblur blur``: make test data with the operator deblur inverts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..paths import PathError, find_images
from ..synth import blur_file
from . import console
from ._app import app
from ._common import (
    ANCHOR_HELP,
    MAX_PIXELS_HELP,
    Job,
    KernelOption,
    check_depth_fits,
    check_out_dir,
    guard_target,
    open_kernel,
    parse_bit_depth,
    parse_max_pixels,
    plan_outputs,
    quiet_decoders,
    run_batch,
    run_interruptible,
    skip_outputs,
    summarize,
)


@app.command()
def blur(
    inputs: Annotated[
        list[str],
        typer.Argument(help="Sharp images: files, folders (recursive) or globs."),
    ],
    kernel: KernelOption,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for the blurred images; mirrors the input layout.",
        ),
    ] = Path("blurred"),
    noise: Annotated[
        float,
        typer.Option(help="Std of white Gaussian noise added, on the [0, 1] scale."),
    ] = 0.0,
    bit_depth: Annotated[
        str,
        typer.Option(
            "--bit-depth",
            help="Output depth: same (as the input), 8, 16 or float32 (TIFF, unclipped).",
        ),
    ] = "same",
    anchor: Annotated[Optional[str], typer.Option(help=ANCHOR_HELP)] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the noise (each file gets seed + its index).")
    ] = 0,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace existing outputs (never an input)."),
    ] = False,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Stop at the first file that fails.")
    ] = False,
    max_pixels: Annotated[
        Optional[int], typer.Option("--max-pixels", help=MAX_PIXELS_HELP)
    ] = None,
) -> None:
    """Blur images with a causal kernel (and optional noise), to make test data.

    Uses the same operator that `deblur restore` inverts: zero padding on the
    two sides away from the anchor, outputs the input's size.  A centred
    kernel (--anchor center) is blurred 'same'-style, for the regularised
    methods.  Integer outputs clip to [0, 1] and say how much; float32 writes
    TIFF and keeps every value.  Exit codes as for `deblur restore`: 0, 1 some
    files failed, 2 bad usage, 130 / 143 interrupted.
    """
    options = {k: v for k, v in locals().items() if k != "verbose"}
    console.setup_logging(False)
    quiet_decoders(False)
    run_interruptible(_blur, options)


def _blur(
    inputs,
    kernel,
    out,
    noise,
    bit_depth,
    anchor,
    seed,
    overwrite,
    fail_fast,
    max_pixels,
) -> int:
    depth = parse_bit_depth(bit_depth)
    max_pixels = parse_max_pixels(max_pixels)
    if noise < 0:
        raise console.fail(f"--noise must be >= 0, got {noise}")
    k, _ = open_kernel(kernel, anchor, exact=False)
    try:
        sources = find_images(inputs)
    except PathError as exc:
        raise console.fail(str(exc))
    check_out_dir(out)
    sources = skip_outputs(sources, out, inputs)
    check_depth_fits(sources, depth)
    suffix = ".tif" if depth == "float32" else None
    targets, protected = plan_outputs(sources, out, suffix)

    def job(index, source, target):
        def work() -> dict:
            why_not = guard_target(source, target, protected)
            if why_not:
                return {"input": str(source.path), "output": None, "error": why_not}
            return blur_file(
                source.path,
                target,
                k,
                noise=noise,
                bit_depth=depth,
                seed=seed + index,
                overwrite=overwrite,
                max_pixels=max_pixels,
            )

        return Job(source, target, work)

    jobs = [job(i, s, t) for i, (s, t) in enumerate(zip(sources, targets))]
    batch = run_batch(jobs, fail_fast=fail_fast, label="blurring", on_record=_show)
    return summarize(batch, "blurred", out)


def _show(record: dict) -> None:
    """The result line on stdout, conversion notes on stderr."""
    if record.get("error"):
        return
    if record.get("notes"):
        console.note(f"note: {record['input']}: {'; '.join(record['notes'])}")
    clipped = record.get("clipped") or 0.0
    extra = f"  ({100 * clipped:.2f}% clipped)" if clipped else ""
    console.out.print(f"{record['input']} -> {record['output']}{extra}")
