"""``deblur blur``: make test data with the operator deblur inverts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..paths import PathError, find_images, output_path
from ..synth import blur_file
from . import console
from ._app import app
from ._common import ANCHOR_HELP, check_out_dir, open_kernel, parse_bit_depth


@app.command()
def blur(
    inputs: Annotated[list[str], typer.Argument(help="Sharp images: files, folders (recursive) or globs.")],
    kernel: Annotated[Path, typer.Option("--kernel", "-k", help="Kernel file: .npy, .txt or .csv.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the blurred images.")] = Path("blurred"),
    noise: Annotated[float, typer.Option(help="Std of white Gaussian noise added, on the [0, 1] scale.")] = 0.0,
    bit_depth: Annotated[str, typer.Option("--bit-depth", help="Output depth: same, 8, 16 or float32.")] = "same",
    anchor: Annotated[Optional[str], typer.Option(help=ANCHOR_HELP)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the noise (each file gets seed + its index).")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
) -> None:
    """Blur images with a causal kernel (and optional noise), to make test data.

    Uses the same operator that `deblur restore` inverts: zero padding on the
    two sides away from the anchor, outputs the input's size.  A centred
    kernel (--anchor center) is blurred 'same'-style, for the regularised
    methods.
    """
    console.setup_logging(False)
    depth = parse_bit_depth(bit_depth)
    if noise < 0:
        raise console.fail(f"--noise must be >= 0, got {noise}")
    k, _ = open_kernel(kernel, anchor, exact=False)
    try:
        sources = find_images(inputs)
    except PathError as exc:
        raise console.fail(str(exc))
    check_out_dir(out)
    suffix = ".tif" if depth == "float32" else None
    failed = 0
    for index, source in enumerate(sources):
        target = output_path(source, out, suffix)
        record = blur_file(
            source.path, target, k, noise=noise, bit_depth=depth,
            seed=seed + index, overwrite=overwrite,
        )
        if record["error"]:
            failed += 1
            console.error(record["error"])
        else:
            clipped = record["clipped"] or 0.0
            console.out.print(f"{source.path} -> {target}" + (f"  ({100 * clipped:.2f}% clipped)" if clipped else ""))
    if failed:
        console.error(f"{failed} of {len(sources)} images failed")
        raise typer.Exit(1)
