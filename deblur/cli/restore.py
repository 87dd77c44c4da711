"""``deblur restore``: undo a known blur on files, folders and globs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..paths import PathError, ReferenceIndex, find_images
from ..report import write_report
from ..restore import (
    CLIP_NOTE,
    METHODS,
    RestoreOptions,
    failed_record,
    resolve_device,
    restore_file,
)
from . import console
from ._app import app
from ._common import (
    ANCHOR_HELP,
    DEVICE_HELP,
    MAX_PIXELS_HELP,
    Job,
    KernelOption,
    check_depth_fits,
    check_out_dir,
    check_report_path,
    guard_target,
    kernel_files,
    kernel_header,
    open_kernel,
    parse_bit_depth,
    parse_max_pixels,
    plan_outputs,
    print_results,
    quiet_decoders,
    run_batch,
    run_interruptible,
    skip_outputs,
    status,
    summarize,
)


def _fmt(value, spec: str) -> str:
    if value is None or value != value:  # None or NaN (no score)
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
    table.add_column("solve (s)", justify="right")
    table.add_column("PSNR blurred", justify="right")
    table.add_column("PSNR restored", justify="right")
    table.add_column("SSIM blurred", justify="right")
    table.add_column("SSIM restored", justify="right")
    table.add_column("clipped", justify="right")
    for r in results:
        if r.get("error"):
            # the reason is on stderr and in the report, one line each
            table.add_row(
                r.get("input"), "failed", "", "", "", "", "", "", "", style="red"
            )
            continue
        size = f"{r.get('width')}x{r.get('height')}x{r.get('channels')} {r.get('bit_depth')}-bit"
        table.add_row(
            r.get("input"),
            size,
            _fmt(r.get("seconds"), ".3f"),
            _fmt(r.get("solve_seconds"), ".3f"),
            _fmt(r.get("psnr_before"), ".2f"),
            _fmt(r.get("psnr_after"), ".2f"),
            _fmt(r.get("ssim_before"), ".4f"),
            _fmt(r.get("ssim_after"), ".4f"),
            _fmt(100 * r.get("clipped"), ".2f") + "%"
            if r.get("clipped") is not None
            else "-",
        )
    return table


@app.command()
def restore(
    inputs: Annotated[
        list[str],
        typer.Argument(help="Blurred images: files, folders (recursive) or globs."),
    ],
    kernel: KernelOption,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for the restored images; mirrors the input layout.",
        ),
    ] = Path("restored"),
    reference: Annotated[
        Optional[Path],
        typer.Option(
            "--reference",
            "-r",
            help="Sharp original(s), a file or a folder matched by relative path, to score PSNR/SSIM.",
        ),
    ] = None,
    report: Annotated[
        Optional[Path],
        typer.Option("--report", help="Write the results as .json or .csv."),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="inverse (exact), or a regularised baseline: wiener, unsupervised-wiener, richardson-lucy."
        ),
    ] = "inverse",
    anchor: Annotated[Optional[str], typer.Option(help=ANCHOR_HELP)] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    bit_depth: Annotated[
        str,
        typer.Option(
            "--bit-depth",
            help="Output depth: same (as the input), 8, 16 or float32 (TIFF, unclipped).",
        ),
    ] = "same",
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
        Optional[str],
        typer.Option(
            help="Regularised methods: how the image continues past its frame: zero (default, as the causal operator assumes), symmetric (often better for photos) or none."
        ),
    ] = None,
    normalize: Annotated[
        bool,
        typer.Option("--normalize", help="Rescale the kernel so its taps sum to 1."),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace existing outputs (never an input)."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Restore even with an unstable kernel.")
    ] = False,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Stop at the first file that fails.")
    ] = False,
    max_pixels: Annotated[
        Optional[int], typer.Option("--max-pixels", help=MAX_PIXELS_HELP)
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show the log (which backend ran, tracebacks of unexpected errors).",
        ),
    ] = False,
) -> None:
    """Restore blurred images with the exact inverse of their causal blur.

    Each input is solved for the sharp image that the kernel blurred; results
    go under --out with the input's relative layout, mode and bit depth.  With
    --reference, a table of PSNR and SSIM before and after is printed.  Exit
    codes: 0 all went well, 1 some files failed (the rest are done, each
    failure is one line and a row of the report), 2 bad usage or an unusable
    kernel, 130 / 143 interrupted by Ctrl-C / SIGTERM (every file written is
    complete).
    """
    options = {k: v for k, v in locals().items() if k != "verbose"}
    console.setup_logging(verbose)
    quiet_decoders(verbose)
    run_interruptible(_restore, options)


def _restore(
    inputs,
    kernel,
    out,
    reference,
    report,
    method,
    anchor,
    device,
    bit_depth,
    balance,
    num_iter,
    boundary,
    normalize,
    overwrite,
    force,
    fail_fast,
    max_pixels,
) -> int:
    # everything that can be checked before the first image
    if method not in METHODS:
        raise console.fail(
            f"--method must be one of {', '.join(METHODS)}, got {method!r}"
        )
    depth = parse_bit_depth(bit_depth)
    max_pixels = parse_max_pixels(max_pixels)
    exact = method == "inverse"
    k, verdict = open_kernel(
        kernel, anchor, normalize=normalize, force=force, exact=exact
    )
    try:
        dev = resolve_device(device)
        sources = find_images(inputs)
        refs = ReferenceIndex(reference) if reference is not None else None
    except (PathError, ValueError) as exc:
        raise console.fail(str(exc))
    check_out_dir(out)
    sources = skip_outputs(sources, out, inputs)
    if refs is not None and refs.single is not None and len(sources) > 1:
        raise console.fail(
            f"--reference {reference} is one file but there are {len(sources)} "
            "inputs; give a folder of references"
        )
    check_depth_fits(sources, depth)
    suffix = ".tif" if depth == "float32" else None
    targets, protected = plan_outputs(sources, out, suffix)
    if refs is not None:
        protected |= refs.paths()
    protected |= kernel_files(kernel)
    check_report_path(report, protected)
    params = _method_params(method, balance, num_iter, boundary)
    options = RestoreOptions(
        kernel=k,
        method=method,
        device=dev,
        bit_depth=depth,
        overwrite=overwrite,
        params=params,
        stability=verdict,
        max_pixels=max_pixels,
    )

    def job(source, target):
        def work() -> dict:
            why_not = guard_target(source, target, protected)
            if why_not:
                return failed_record(source.path, why_not, method)
            ref, why = refs.find(source) if refs is not None else (None, None)
            return restore_file(source.path, target, options, ref, why)

        return Job(source, target, work)

    jobs = [job(s, t) for s, t in zip(sources, targets)]
    batch = run_batch(
        jobs, fail_fast=fail_fast, label="restoring", on_record=_show_notes
    )

    results = batch.results
    print_results(results_table(results, f"deblur restore --method {method}"))
    code = 0
    if report is not None:
        header = {
            "kernel": kernel_header(k, verdict),
            "method": method,
            "device": dev,
            "status": status(batch),
        }
        if batch.interrupted is not None or batch.stopped:
            done = {r["input"] for r in results}
            header["not_started"] = [
                str(s.path)
                for s in sources
                if str(s.path) not in done and str(s.path) != batch.current
            ]
        try:
            write_report(report, results, **header)
        except (OSError, ValueError) as exc:
            console.error(f"{report}: report not written ({exc})")
            code = 1
    return summarize(batch, "restored", out, report) or code


def _show_notes(record: dict) -> None:
    """One stderr line per file that was converted on reading or not scored."""
    if record.get("error"):
        return
    notes = [n for n in record.get("notes", ()) if not n.endswith(CLIP_NOTE)]
    if record.get("reference_error"):
        notes = [n for n in notes if n != record["reference_error"]]
        console.warn(f"{record['input']}: {record['reference_error']}")
    if notes:
        console.note(f"note: {record['input']}: {'; '.join(notes)}")


def _method_params(method, balance, num_iter, boundary) -> dict:
    """The regularised methods' options, refused where they do not apply."""
    params = {}
    if balance is not None:
        if method != "wiener":
            raise console.fail(f"--balance applies to --method wiener, not {method}")
        if not balance > 0:
            raise console.fail(f"--balance must be a positive number, got {balance}")
        params["balance"] = balance
    if num_iter is not None:
        if method != "richardson-lucy":
            raise console.fail(
                f"--num-iter applies to --method richardson-lucy, not {method}"
            )
        if num_iter < 1:
            raise console.fail(f"--num-iter must be at least 1, got {num_iter}")
        params["num_iter"] = num_iter
    if boundary is not None:
        if method == "inverse":
            raise console.fail(
                "--boundary applies to the regularised methods, not --method inverse"
            )
        if boundary not in ("zero", "symmetric", "none"):
            raise console.fail(
                f"--boundary must be zero, symmetric or none, got {boundary!r}"
            )
        params["boundary"] = boundary
    return params
