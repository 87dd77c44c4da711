"""``deblur compare``: every method on the same images, in one table and one picture each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..compare import METHODS, compare_file
from ..paths import PathError, ReferenceIndex, find_images, output_path
from ..report import write_report
from ..restore import resolve_device
from . import console
from ._app import app
from ._common import (
    ANCHOR_HELP,
    DEVICE_HELP,
    KernelOption,
    check_out_dir,
    check_report_path,
    kernel_files,
    open_kernel,
    run_interruptible,
)

#: the columns of a compare report, in order (CSV)
COMPARE_FIELDS = (
    "input",
    "reference",
    "method",
    "psnr",
    "ssim",
    "seconds",
    "best",
    "data_range",
    "error",
    "picture",
    "params",
)


@app.command()
def compare(
    inputs: Annotated[
        list[str],
        typer.Argument(help="Blurred images: files, folders (recursive) or globs."),
    ],
    kernel: KernelOption,
    reference: Annotated[
        Path,
        typer.Option(
            "--reference",
            "-r",
            help="Sharp original(s): a file or a folder matched by relative path.",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the side-by-side pictures.")
    ] = Path("compare"),
    report: Annotated[
        Optional[Path],
        typer.Option("--report", help="Write every score as .json or .csv."),
    ] = None,
    methods: Annotated[
        str, typer.Option(help="Comma-separated methods to run.")
    ] = ",".join(METHODS),
    anchor: Annotated[Optional[str], typer.Option(help=ANCHOR_HELP)] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    balance: Annotated[
        Optional[float],
        typer.Option(
            help="Wiener balance; by default derived from the image's estimated noise."
        ),
    ] = None,
    num_iter: Annotated[
        Optional[int], typer.Option("--num-iter", help="Richardson-Lucy iterations.")
    ] = None,
    boundary: Annotated[
        str,
        typer.Option(
            help="How the regularised methods continue the image past its frame: zero (as the causal operator assumes), symmetric (mirrored, often better for photos) or none."
        ),
    ] = "zero",
    normalize: Annotated[
        bool,
        typer.Option("--normalize", help="Rescale the kernel so its taps sum to 1."),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing pictures.")
    ] = False,
) -> None:
    """Run every method on the same images and show which restores best.

    Prints PSNR, SSIM and time per method and image (the best PSNR marked),
    writes one side-by-side PNG per image under --out (blurred, each method,
    reference, each labelled with its PSNR) and, with --report, every score.
    The exact inverse is skipped, with the reason, for a centred or unstable
    kernel; the regularised methods still run.
    """
    options = dict(locals())
    console.setup_logging(False)
    run_interruptible(
        _compare,
        options,
        stopped="before every image was compared; every picture written is complete",
    )


def _compare(
    inputs,
    kernel,
    reference,
    out,
    report,
    methods,
    anchor,
    device,
    balance,
    num_iter,
    boundary,
    normalize,
    overwrite,
) -> int:
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in chosen if m not in METHODS]
    if bad or not chosen:
        raise console.fail(
            f"--methods takes a comma-separated list of {', '.join(METHODS)}, got {methods!r}"
        )
    k, verdict = open_kernel(kernel, anchor, normalize=normalize, exact=False)
    try:
        dev = resolve_device(device)
        sources = find_images(inputs)
        refs = ReferenceIndex(reference)
    except (PathError, ValueError) as exc:
        raise console.fail(str(exc))
    if refs.single is not None and len(sources) > 1:
        raise console.fail(
            f"--reference {reference} is one file but there are {len(sources)} inputs; give a folder"
        )
    check_out_dir(out)
    protected = (
        {s.path.resolve() for s in sources} | refs.paths() | kernel_files(kernel)
    )
    check_report_path(report, protected)
    if boundary not in ("zero", "symmetric", "none"):
        raise console.fail(
            f"--boundary must be zero, symmetric or none, got {boundary!r}"
        )
    params = {
        m: {"boundary": boundary}
        for m in ("wiener", "unsupervised-wiener", "richardson-lucy")
    }
    if balance is not None:
        if not balance > 0:
            raise console.fail(f"--balance must be a positive number, got {balance}")
        params["wiener"]["balance"] = balance
    if num_iter is not None:
        if num_iter < 1:
            raise console.fail(f"--num-iter must be at least 1, got {num_iter}")
        params["richardson-lucy"]["num_iter"] = num_iter

    table = Table(
        title=f"deblur compare ({k.path}, gain {verdict.gain:.3g}, {verdict.verdict})",
        title_justify="left",
    )
    for name, justify in [
        ("image", "left"),
        ("method", "left"),
        ("PSNR", "right"),
        ("SSIM", "right"),
        ("time (s)", "right"),
        ("", "left"),
    ]:
        table.add_column(name, justify=justify)
    results, failed = [], 0
    with console.progress() as bar:
        task = bar.add_task("comparing", total=len(sources), status="")
        for source in sources:
            picture = output_path(source, out, ".png")
            ref, why = refs.find(source)
            if ref is None:
                records, panels = (
                    [{"input": str(source.path), "method": None, "error": why}],
                    [],
                )
            elif picture.resolve() in protected:
                records, panels = (
                    [
                        {
                            "input": str(source.path),
                            "method": None,
                            "error": f"{picture}: the picture would replace an input, a reference or the kernel; choose another --out",
                        }
                    ],
                    [],
                )
            elif picture.exists() and not overwrite:
                records, panels = (
                    [
                        {
                            "input": str(source.path),
                            "method": None,
                            "error": f"{picture}: exists; pass --overwrite to replace it",
                        }
                    ],
                    [],
                )
            else:
                records, panels = compare_file(
                    source.path,
                    ref,
                    k,
                    chosen,
                    params=params,
                    device=dev,
                    stability=verdict,
                )
            results += records
            if panels:
                from ..plots import plot_comparison

                try:
                    picture.parent.mkdir(parents=True, exist_ok=True)
                    plot_comparison(panels, picture)
                    for r in records:
                        r["picture"] = str(picture)
                except (OSError, ValueError) as exc:
                    records[0]["error"] = f"{picture}: picture not written ({exc})"
            for r in records:
                if r.get("method") is None:
                    failed += 1
                    console.error(r["error"])
                    table.add_row(
                        str(source.path),
                        "-",
                        "-",
                        "-",
                        "-",
                        f"failed: {r['error']}",
                        style="red",
                    )
                    continue
                if r["error"]:
                    table.add_row(
                        str(source.path),
                        r["method"],
                        "-",
                        "-",
                        "-",
                        r["error"],
                        style="dim",
                    )
                    continue
                mark = "best" if r.get("best") else ""
                table.add_row(
                    str(source.path),
                    r["method"],
                    f"{r['psnr']:.2f}",
                    "-" if r["ssim"] != r["ssim"] else f"{r['ssim']:.4f}",
                    f"{r['seconds']:.3f}",
                    mark,
                    style="bold green" if mark else None,
                )
            bar.update(task, advance=1, status=source.relative.name)
    console.out.print(table)
    if report is not None:
        write_report(
            report,
            results,
            fields=COMPARE_FIELDS,
            kernel=k.describe(verdict),
            methods=chosen,
            device=dev,
        )
    if failed:
        console.error(f"{failed} of {len(sources)} images could not be compared")
        return 1
    return 0
