"""``deblur bench``: time the inverse and its backward against the yardsticks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .. import bench as _bench
from ..atomic import write_text_atomic
from . import console
from ._app import app

QUICK = {"size": (256, 256), "kernel_sizes": (3, 5), "dense_size": 48, "repeats": 5}


def _parse_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise typer.BadParameter(
            f"got {text!r}; give N or HxW, e.g. 1024 or 720x1280", param_hint="--size"
        )
    return parts[0], parts[1]


def _parse_kernel_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter(
            f"got {text!r}; give positive sizes separated by commas, e.g. 3,5,7",
            param_hint="--kernel-sizes",
        )
    return sizes


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.3g} ms"


def _times_table(records: list[dict], title: str, key: str) -> Table:
    cases = list(dict.fromkeys(r["case"] for r in records))
    methods = [m for m in _bench.METHODS if any(r["method"] == m for r in records)]
    table = Table(title=title, title_justify="left")
    table.add_column("method")
    for case in cases:
        table.add_column(case, justify="right")
    for method in methods:
        row = [method]
        for case in cases:
            found = [r for r in records if r["case"] == case and r["method"] == method]
            row.append(_ms(found[0][key]) if found else "")
        table.add_row(*row)
    return table


def _ratios_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("case", "left"),
        ("ratio", "left"),
        ("value", "right"),
        ("target", "right"),
        ("", "left"),
    ):
        table.add_column(name, justify=justify)
    for row in rows:
        verdict = {True: "[green]met[/]", False: "[red]not met[/]", None: ""}[
            row["met"]
        ]
        table.add_row(
            row["case"], row["ratio"], f"{row['value']:.3g}", row["target"], verdict
        )
    return table


@app.command()
def bench(
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="Small run: 256x256x3, k = 3 and 5, dense on 48x48."
        ),
    ] = False,
    size: Annotated[
        Optional[str], typer.Option(help="Image size N or HxW (default 1024).")
    ] = None,
    channels: Annotated[int, typer.Option(min=1, help="Image channels.")] = 3,
    kernel_sizes: Annotated[
        Optional[str],
        typer.Option("--kernel-sizes", help="Kernel sizes k (k x k), e.g. 3,5,7."),
    ] = None,
    repeats: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="Runs per timing after a warm-up (default 7).",
        ),
    ] = None,
    dense_size: Annotated[
        Optional[int],
        typer.Option(
            "--dense-size",
            min=0,
            help="Side of the dense-solve case, 0 to skip it (default 96).",
        ),
    ] = None,
    threads: Annotated[
        Optional[int],
        typer.Option(min=1, help="Threads for torch and numba (default: all cores)."),
    ] = None,
    device: Annotated[
        str, typer.Option(help="Where the torch methods run: cpu or cuda.")
    ] = "cpu",
    statistic: Annotated[
        str,
        typer.Option(
            help="Which timing the tables and ratios use: median, or min (steadier "
            "when other processes share the machine)."
        ),
    ] = "median",
    json_path: Annotated[
        Optional[Path],
        typer.Option("--json", help="Also write the timing records to this JSON file."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the log.")
    ] = False,
) -> None:
    """Time the exact inverse and its backward against the yardsticks.

    On one float32 image (1024x1024x3 unless told otherwise) and a causal
    k x k kernel for k = 3, 5, 7: deblur's inverse, its backward call (both
    gradients), the causal blur with torch conv2d, scipy's
    spsolve_triangular, the torch-ops wavefront, a clone (the memory floor),
    and a dense torch.linalg.solve against substitution on a 96x96 image.
    Each time is the median (or, with --statistic min, the fastest) of
    several runs after a warm-up; the fast methods are timed in turn, round
    by round, so that a burst of load from other processes hits them all.
    Prints the times and the ratios with the speed targets on stdout.
    """
    console.setup_logging(verbose)
    options = dict(QUICK) if quick else {}
    if size is not None:
        options["size"] = _parse_size(size)
    if kernel_sizes is not None:
        options["kernel_sizes"] = _parse_kernel_sizes(kernel_sizes)
    if repeats is not None:
        options["repeats"] = repeats
    if dense_size is not None:
        options["dense_size"] = dense_size
    if statistic not in ("median", "min"):
        raise typer.BadParameter(
            f"got {statistic!r}; use median or min", param_hint="--statistic"
        )
    key = "seconds" if statistic == "median" else "min_seconds"
    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(
            f"got {device!r}; use cpu or cuda", param_hint="--device"
        )
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise console.fail(
                "--device cuda: torch sees no CUDA GPU; use --device cpu"
            )
    if json_path is not None and not json_path.parent.is_dir():
        raise console.fail(
            f"--json {json_path}: the folder {json_path.parent} does not exist"
        )
    if threads is not None:
        import numba
        import torch

        threads = min(threads, numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(threads)
        torch.set_num_threads(threads)

    env = _bench.environment()
    console.note(
        f"torch {env['torch']}, numba {env['numba']}, {env['threads_numba']} numba / "
        f"{env['threads_torch']} torch threads, {env['processor']}"
    )

    def progress(record: dict) -> None:
        console.note(
            f"{record['case']}  {record['method']}: {_ms(record['seconds'])}"
            + (f"  ({record['note']})" if record["note"].startswith("skipped") else "")
        )

    try:
        records = _bench.run_bench(
            channels=channels, device=device, on_record=progress, **options
        )
    except ValueError as exc:
        raise console.fail(str(exc)) from None

    if json_path is not None:
        # the records first: a full or closed stdout must not lose the run
        write_text_atomic(json_path, json.dumps(records, indent=2) + "\n")
        console.note(f"wrote {json_path}")
    shape = records[0]["case"].split()[0] if records else ""
    title = f"{statistic} times, float32 {shape}, {device}"
    console.out.print(_times_table(records, title, key))
    rows = _bench.ratios(records, statistic=key)
    heading = f"ratios of {statistic} times"
    if not shape.startswith("1024x1024"):
        # the targets are set for 1024 x 1024 x 3; smaller images do not meet them
        rows = [dict(r, target=None, met=None) for r in rows]
        heading += " (targets apply to 1024x1024x3 only)"
    console.out.print(_ratios_table(rows, heading))
    for r in records:
        if r["note"].startswith("skipped"):
            console.warn(f"{r['method']} ({r['case']}) {r['note']}")
