"""``deblur restore``: undo a known blur on files, folders and globs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..paths import PathError, ReferenceIndex, find_images, output_path
from ..report import write_report
from ..restore import METHODS, RestoreOptions, resolve_device, restore_file
from . import console
from ._app import app
from ._common import (
    ANCHOR_HELP,
    DEVICE_HELP,
    Terminated,
    check_out_dir,
    on_sigterm,
    open_kernel,
    parse_bit_depth,
)


def _fmt(value, spec: str) -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return "inf"
    return format(value, spec)


def results_table(results: list[dict], title: str) -> Table:
    """One row per image: size, time, PSNR and SSIM before and after, clipped."""
    table = Table(title=title, title_justify="left")
    table.add_column("image")
    table.add_column("size", justify="right")
    table.add_column("time (s)", justify="right")
    table.add_column("PSNR blurred", justify="right")
    table.add_column("PSNR restored", justify="right")
    table.add_column("SSIM blurred", justify="right")
    table.add_column("SSIM restored", justify="right")
    table.add_column("clipped", justify="right")
    for r in results:
        if r["error"]:
            table.add_row(r["input"], "", "", "", "", "", "", "", style="red")
            table.add_row(f"  failed: {r['error']}", "", "", "", "", "", "", "", style="red")
            continue
        size = f"{r['width']}x{r['height']}x{r['channels']} {r['bit_depth']}-bit"
        table.add_row(
            r["input"],
            size,
            _fmt(r["seconds"], ".3f"),
            _fmt(r["psnr_before"], ".2f"),
            _fmt(r["psnr_after"], ".2f"),
            _fmt(r["ssim_before"], ".4f"),
            _fmt(r["ssim_after"], ".4f"),
            _fmt(100 * r["clipped"], ".2f") + "%" if r["clipped"] is not None else "-",
        )
    return table


@app.command()
def restore(
    inputs: Annotated[list[str], typer.Argument(help="Blurred images: files, folders (recursive) or globs.")],
    kernel: Annotated[Path, typer.Option("--kernel", "-k", help="Kernel file: .npy, .txt or .csv.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the restored images; mirrors the input layout.")] = Path("restored"),
    reference: Annotated[Optional[Path], typer.Option("--reference", "-r", help="Sharp original(s), a file or a folder matched by relative path, to score PSNR/SSIM.")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the results as .json or .csv.")] = None,
    method: Annotated[str, typer.Option(help="inverse (exact), or a regularised baseline: wiener, unsupervised-wiener, richardson-lucy.")] = "inverse",
    anchor: Annotated[Optional[str], typer.Option(help=ANCHOR_HELP)] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    bit_depth: Annotated[str, typer.Option("--bit-depth", help="Output depth: same (as the input), 8, 16 or float32 (TIFF, unclipped).")] = "same",
    balance: Annotated[Optional[float], typer.Option(help="Wiener balance; by default derived from the image's estimated noise.")] = None,
    num_iter: Annotated[Optional[int], typer.Option("--num-iter", help="Richardson-Lucy iterations.")] = None,
    normalize: Annotated[bool, typer.Option("--normalize", help="Rescale the kernel so its taps sum to 1.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Restore even with an unstable kernel.")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first file that fails.")] = False,
    max_pixels: Annotated[Optional[int], typer.Option("--max-pixels", help="Refuse images with more pixels than this (decompression-bomb guard).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the log (which backend ran).")] = False,
) -> None:
    """Restore blurred images with the exact inverse of their causal blur.

    Each input is solved for the sharp image that the kernel blurred; results
    go under --out with the input's relative layout, mode and bit depth.  With
    --reference, a table of PSNR and SSIM before and after is printed.  Exit
    codes: 0 all went well, 1 some files failed (the rest are done), 2 bad
    usage or an unusable kernel.
    """
    console.setup_logging(verbose)
    on_sigterm()
    if method not in METHODS:
        raise console.fail(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    depth = parse_bit_depth(bit_depth)
    exact = method == "inverse"
    k, verdict = open_kernel(kernel, anchor, normalize=normalize, force=force, exact=exact)
    try:
        dev = resolve_device(device)
        sources = find_images(inputs)
        refs = ReferenceIndex(reference) if reference is not None else None
    except (PathError, ValueError) as exc:
        raise console.fail(str(exc))
    check_out_dir(out)
    if refs is not None and refs.single is not None and len(sources) > 1:
        raise console.fail(
            f"--reference {reference} is one file but there are {len(sources)} "
            "inputs; give a folder of references"
        )
    params = {}
    if balance is not None:
        params["balance"] = balance
    if num_iter is not None:
        params["num_iter"] = num_iter
    options = RestoreOptions(
        kernel=k, method=method, device=dev, bit_depth=depth, overwrite=overwrite,
        params=params, stability=verdict, max_pixels=max_pixels,
    )

    suffix = ".tif" if depth == "float32" else None
    results: list[dict] = []
    interrupted = None
    with console.progress() as bar:
        task = bar.add_task("restoring", total=len(sources), status="")
        try:
            for source in sources:
                target = output_path(source, out, suffix)
                ref, why = refs.find(source) if refs is not None else (None, None)
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    record = {"input": str(source.path), "error": f"{target.parent}: cannot create folder ({exc.strerror})"}
                else:
                    record = restore_file(source.path, target, options, ref, why)
                results.append(record)
                if record["error"]:
                    console.error(record["error"])
                    if fail_fast:
                        break
                bar.update(task, advance=1, status=source.relative.name)
        except KeyboardInterrupt:
            interrupted = 130
        except Terminated:
            interrupted = 143

    full = [dict({"seconds": None, "clipped": None}, **r) for r in results]
    console.out.print(results_table([_fill(r) for r in full], f"deblur restore --method {method}"))
    failed = [r for r in results if r.get("error")]
    if report is not None:
        try:
            write_report(report, results, kernel=k.describe(verdict), method=method, device=dev)
        except (OSError, ValueError) as exc:
            console.error(f"{report}: report not written ({exc})")
            raise typer.Exit(2)
    done = len(results) - len(failed)
    if interrupted:
        console.error(
            f"interrupted: {done} of {len(sources)} images restored, "
            f"{len(sources) - len(results)} not started; every written file is complete"
        )
        raise typer.Exit(interrupted)
    if failed:
        console.error(f"{len(failed)} of {len(results)} images failed")
        raise typer.Exit(1)


def _fill(record: dict) -> dict:
    keys = ("width", "height", "channels", "bit_depth", "psnr_before", "psnr_after",
            "ssim_before", "ssim_after", "clipped", "seconds", "error")
    return {k: record.get(k) for k in ("input", *keys)}
