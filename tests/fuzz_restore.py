"""Fuzz ``deblur restore`` with mutated image and kernel files.

Small crops of the shipped blurred samples are written in every format and
mode deblur reads (PNG 8/16-bit gray, RGB, RGBA, gray + alpha, palette, 1-bit;
TIFF 8/16-bit, float32, compressed; JPEG RGB, gray, CMYK; BMP), then mutated:
bytes flipped, truncated, headers swapped between formats, chunks spliced,
inserted, deleted or repeated, PNG sizes rewritten with a valid checksum.
Each mutant goes through :func:`deblur.restore.restore_file` and the CLI's
error printing.  What must hold for every one of them:

- no exception escapes (a *traceback*);
- a failure is one non-empty line that names the file, printed as one line,
  and nothing is written (no output, no temporary file);
- a success writes a readable image of the input's exact shape;
- a mutated kernel file is refused with a ``KernelError``, nothing else.

A few real ``deblur restore`` runs on folders of mutants check the exit codes
(1 when any file failed), that stderr holds no traceback and one line per
failure.  ``tests/test_fuzz.py`` runs a small seeded version in CI; the long
run is::

    .venv/bin/python tests/fuzz_restore.py --count 1000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images" / "blurred"

#: the size limit the fuzz runs with, so that a mutated header cannot make a
#: run decode (and solve) a huge image
MAX_PIXELS = 1 << 16

#: the kind of each failure, by a fragment of its message, first match wins
KINDS = (
    ("unexpected", "unexpected "),
    ("empty", "file is empty"),
    ("not an image", "not a PNG, JPEG, TIFF or BMP"),
    ("truncated or corrupt", "truncated or corrupt"),
    ("too large", "exceeds the limit"),
    ("several frames", "has 2 frames"),
    ("several frames", " frames;"),
    ("several pages", " pages;"),
    ("unsupported", "unsupported"),
    ("not supported", "not supported"),
    ("no image", "holds no image"),
    ("non-finite", "non-finite"),
    ("solve failed", "solve failed"),
    ("out of memory", "out of memory"),
    ("name does not match content", "cannot be written as"),
    ("not written", "not written"),
    ("cannot store", "cannot"),
)

MUTATIONS = (
    "flip",
    "flip-header",
    "truncate",
    "swap-header",
    "splice",
    "zero-run",
    "insert",
    "delete",
    "repeat",
    "png-size",
    "png-chunk",
    "rename",
)


# ----------------------------------------------------------------------------
# seeds


def _crop(path: Path, h: int, w: int, top: int = 200, left: int = 180) -> np.ndarray:
    from deblur.imageio import read_image

    data = read_image(path).data[top : top + h, left : left + w]
    return data


def make_seeds(folder: Path) -> list[Path]:
    """Write small valid images of every format and mode; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb8 = np.rint(
        _crop(SAMPLES / "diagonal" / "8bit" / "chelsea.png", 14, 19) * 255
    ).astype(np.uint8)
    rgb16 = np.rint(
        _crop(SAMPLES / "diagonal" / "16bit" / "chelsea.png", 13, 17) * 65535
    ).astype(np.uint16)
    gray8 = np.rint(
        _crop(SAMPLES / "diagonal" / "8bit" / "camera.png", 15, 12)[..., 0] * 255
    ).astype(np.uint8)
    gray16 = np.rint(
        _crop(SAMPLES / "diagonal" / "16bit" / "camera.png", 11, 16)[..., 0] * 65535
    ).astype(np.uint16)
    alpha = (
        np.linspace(0, 255, rgb8.shape[0] * rgb8.shape[1])
        .reshape(rgb8.shape[:2])
        .astype(np.uint8)
    )

    def pil(name, array, mode=None, **options):
        image = PILImage.fromarray(array)
        if mode is not None:
            image = image.convert(mode)
        image.save(folder / name, **options)

    import imagecodecs

    (folder / "rgb16.png").write_bytes(imagecodecs.png_encode(rgb16))
    pil("rgb8.png", rgb8)
    pil("rgba8.png", np.dstack([rgb8, alpha]))
    pil("la8.png", np.dstack([rgb8[..., 0], alpha]))
    pil("gray8.png", gray8)
    pil("gray16.png", gray16)
    pil("palette.png", rgb8, "P")
    pil("onebit.png", gray8, "1")
    pil("rgb.jpg", rgb8, quality=90)
    pil("gray.jpg", gray8, quality=90)
    pil("cmyk.jpg", rgb8, "CMYK", quality=90)
    pil("rgb.bmp", rgb8)
    pil("gray.bmp", gray8)
    tifffile.imwrite(folder / "rgb8.tif", rgb8, photometric="rgb")
    tifffile.imwrite(folder / "gray16.tif", gray16)
    tifffile.imwrite(folder / "float.tif", (gray8 / 255.0).astype(np.float32))
    tifffile.imwrite(
        folder / "rgbf.tif", (rgb8 / 255.0).astype(np.float32), photometric="rgb"
    )
    tifffile.imwrite(folder / "zlib.tif", rgb16, photometric="rgb", compression="zlib")
    tifffile.imwrite(folder / "lzw.tif", gray8, compression="lzw")
    return sorted(folder.iterdir())


# ----------------------------------------------------------------------------
# mutations


def _png_chunks(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each chunk after the signature, as far as it parses."""
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if pos + 12 + length > len(data):
            break
        chunks.append((pos, length))
        pos += 12 + length
    return chunks


def _fix_crc(data: bytearray, pos: int, length: int) -> None:
    body = bytes(data[pos + 4 : pos + 8 + length])
    data[pos + 8 + length : pos + 12 + length] = struct.pack(">I", zlib.crc32(body))


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> tuple[str, bytes]:
    """Return ``(mutation, mutated bytes)`` for one random mutation of ``data``."""
    kind = rng.choice(MUTATIONS)
    buf = bytearray(data)
    n = len(buf)
    is_png = data.startswith(b"\x89PNG")
    if kind in ("png-size", "png-chunk") and not is_png:
        kind = "flip"
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(n)] ^= rng.randint(1, 255)
    elif kind == "flip-header":
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(min(n, 64))] ^= rng.randint(1, 255)
    elif kind == "truncate":
        buf = buf[: rng.randrange(n)]
    elif kind == "swap-header":
        other = rng.choice(others)
        cut = rng.randint(2, 64)
        buf = bytearray(other[:cut]) + buf[cut:]
    elif kind == "splice":
        other = rng.choice(others)
        buf = buf[: rng.randrange(n)] + bytearray(other[rng.randrange(len(other)) :])
    elif kind == "zero-run":
        start, length = rng.randrange(n), rng.randint(1, 64)
        buf[start : start + length] = bytes(len(buf[start : start + length]))
    elif kind == "insert":
        at = rng.randrange(n)
        buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    elif kind == "delete":
        start = rng.randrange(n)
        del buf[start : start + rng.randint(1, 32)]
    elif kind == "repeat":
        start = rng.randrange(n)
        chunk = buf[start : start + rng.randint(1, 256)]
        buf[start:start] = chunk
    elif kind == "png-size":
        # a valid checksum gets the new size past Pillow's CRC check
        pos, length = _png_chunks(data)[0]
        w = rng.choice(
            [0, 1, 3, 255, 4096, 70000, 2**31 - 1, rng.randrange(1, 1 << 16)]
        )
        h = rng.choice([0, 1, 7, 4096, 2**31 - 1, rng.randrange(1, 1 << 16)])
        buf[pos + 8 : pos + 16] = struct.pack(">II", w, h)
        _fix_crc(buf, pos, length)
    elif kind == "png-chunk":
        chunks = _png_chunks(data)
        pos, length = rng.choice(chunks)
        if length:
            for _ in range(rng.randint(1, 6)):
                buf[pos + 8 + rng.randrange(length)] ^= rng.randint(1, 255)
        else:
            buf[pos + 4] ^= 0x20  # flip the chunk type's case
        _fix_crc(buf, pos, length)
    elif kind == "rename":
        for _ in range(rng.randint(0, 3)):
            buf[rng.randrange(n)] ^= rng.randint(1, 255)
    return kind, bytes(buf)


# ----------------------------------------------------------------------------
# checks


def kind_of(error: str) -> str:
    for kind, fragment in KINDS:
        if fragment in error:
            return kind
    return "other"


@dataclass
class Stats:
    """What a fuzz run saw."""

    inputs: int = 0
    ok: int = 0
    failures: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    mutations: Counter = field(default_factory=Counter)
    tracebacks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    kernel_inputs: int = 0
    kernel_refused: int = 0
    kernel_ok: int = 0
    slowest: float = 0.0
    seconds: float = 0.0
    subprocess_runs: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "inputs": self.inputs,
            "restored": self.ok,
            "failed": sum(self.failures.values()),
            "failures_by_kind": dict(self.failures.most_common()),
            "example_per_kind": self.examples,
            "mutations": dict(self.mutations.most_common()),
            "tracebacks": len(self.tracebacks),
            "problems": len(self.problems),
            "unexpected": len(self.unexpected),
            "kernel_inputs": self.kernel_inputs,
            "kernel_refused": self.kernel_refused,
            "kernel_accepted": self.kernel_ok,
            "slowest_input_seconds": round(self.slowest, 3),
            "seconds": round(self.seconds, 1),
            "subprocess_runs": self.subprocess_runs,
        }


def _printed(message: str) -> str:
    """What the CLI prints on stderr for a failed file."""
    from rich.console import Console

    from deblur.cli import console

    saved = console.err
    buffer = io.StringIO()
    console.err = Console(file=buffer, highlight=False, soft_wrap=True, width=80)
    try:
        console.error(message)
    finally:
        console.err = saved
    return buffer.getvalue()


def _leftovers(folder: Path) -> list[str]:
    from deblur.atomic import is_atomic_temp

    return [
        p.name for p in folder.iterdir() if p.name.startswith(".") or is_atomic_temp(p)
    ]


def check_one(path: Path, out_dir: Path, options, stats: Stats, label: str) -> None:
    """Restore one mutant and check every rule; record what happened."""
    from deblur.imageio import read_image
    from deblur.restore import restore_file

    target = out_dir / path.name
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            record = restore_file(path, target, options)
    except Exception:
        stats.tracebacks.append(f"{label}: {traceback.format_exc()}")
        return
    finally:
        stats.slowest = max(stats.slowest, time.perf_counter() - start)
    left = _leftovers(out_dir)
    if left:
        stats.problems.append(f"{label}: left behind {left}")
    error = record["error"]
    if error:
        kind = kind_of(error)
        stats.failures[kind] += 1
        stats.examples.setdefault(kind, error.replace(str(path), path.name))
        if "unexpected " in error:
            stats.unexpected.append(f"{label}: {error}")
        printed = _printed(error)
        if "\n" in error or not error.strip() or printed.count("\n") != 1:
            stats.problems.append(f"{label}: not one line: {printed!r}")
        if str(path) not in error and str(target) not in error:
            stats.problems.append(f"{label}: error does not name the file: {error}")
        if target.exists():
            stats.problems.append(f"{label}: failed but wrote {target}")
        return
    stats.ok += 1
    try:
        before = read_image(path, max_pixels=MAX_PIXELS)
        after = read_image(target, max_pixels=MAX_PIXELS)
    except Exception as exc:
        stats.problems.append(f"{label}: output unreadable: {exc}")
        return
    if after.data.shape != before.data.shape or after.mode != before.mode:
        stats.problems.append(
            f"{label}: shape {after.data.shape} {after.mode} for input "
            f"{before.data.shape} {before.mode}"
        )
    if not np.all(np.isfinite(after.data)):
        stats.problems.append(f"{label}: output holds non-finite values")
    target.unlink()


def check_kernel(path: Path, stats: Stats, label: str) -> None:
    """Load one mutated kernel file: only ``KernelError`` may come out."""
    from deblur.kernel import KernelError, load_kernel

    stats.kernel_inputs += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_kernel(path)
    except KernelError as exc:
        stats.kernel_refused += 1
        if "\n" in str(exc) or str(path) not in str(exc):
            stats.problems.append(
                f"{label}: kernel error not one line naming the file: {exc}"
            )
    except Exception:
        stats.tracebacks.append(f"{label}: {traceback.format_exc()}")
    else:
        stats.kernel_ok += 1


def _kernel_seeds(folder: Path) -> list[Path]:
    from deblur.kernel import make_kernel, save_kernel

    save_kernel(folder / "k.npy", make_kernel("diagonal", 3))
    save_kernel(folder / "k.txt", make_kernel("corner-gaussian", 3))
    save_kernel(folder / "pc.npy", make_kernel("per-channel", 3))
    return [folder / "k.npy", folder / "k.txt", folder / "pc.npy"]


# ----------------------------------------------------------------------------
# runs


def fuzz(
    count: int, seed: int, workdir: Path, kernel_count: int | None = None
) -> Stats:
    """Restore ``count`` mutants in-process, load ``kernel_count`` mutated kernels."""
    import logging

    from deblur.kernel import make_kernel
    from deblur.paths import IMAGE_SUFFIXES
    from deblur.restore import RestoreOptions

    # as the CLI does: a corrupt file is reported by its one error line
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    start = time.perf_counter()
    rng = random.Random(seed)
    seeds = make_seeds(workdir / "seeds")
    blobs = [p.read_bytes() for p in seeds]
    inputs, out_dir = workdir / "mutants", workdir / "out"
    inputs.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = RestoreOptions(
        kernel=make_kernel("diagonal", 3), overwrite=True, max_pixels=MAX_PIXELS
    )
    stats = Stats()
    # every seed once as it is: the valid path must work for each format
    for i, p in enumerate(seeds):
        stats.inputs += 1
        stats.mutations["none"] += 1
        copy = inputs / f"seed{i:02d}{p.suffix}"
        shutil.copyfile(p, copy)
        check_one(copy, out_dir, options, stats, f"seed {p.name}")
        if stats.failures:
            stats.problems.append(f"seed {p.name} failed: {stats.failures}")
            stats.failures.clear()
    for i in range(count):
        j = rng.randrange(len(seeds))
        kind, data = mutate(blobs[j], rng, blobs[:j] + blobs[j + 1 :])
        suffix = rng.choice(IMAGE_SUFFIXES) if kind == "rename" else seeds[j].suffix
        path = inputs / f"m{i:05d}{suffix}"
        path.write_bytes(data)
        stats.inputs += 1
        stats.mutations[kind] += 1
        check_one(path, out_dir, options, stats, f"#{i} {kind} of {seeds[j].name}")
        path.unlink()
    kernels = _kernel_seeds(workdir)
    kblobs = [p.read_bytes() for p in kernels]
    for i in range(count // 10 if kernel_count is None else kernel_count):
        j = rng.randrange(len(kernels))
        kind, data = mutate(kblobs[j], rng, kblobs[:j] + kblobs[j + 1 :])
        path = workdir / f"km{i:04d}{kernels[j].suffix}"
        path.write_bytes(data)
        check_kernel(path, stats, f"kernel #{i} {kind} of {kernels[j].name}")
        path.unlink()
    stats.seconds = time.perf_counter() - start
    return stats


def deblur_exe() -> Path | None:
    exe = Path(sys.executable).with_name("deblur")
    return exe if exe.exists() else None


def fuzz_subprocess(count: int, seed: int, workdir: Path, exe: Path) -> dict:
    """Run ``deblur restore`` on a folder of ``count`` mutants; return the checks."""
    from deblur.kernel import make_kernel, save_kernel

    rng = random.Random(seed)
    seeds = make_seeds(workdir / "seeds")
    blobs = [p.read_bytes() for p in seeds]
    folder = workdir / f"run{seed}"
    folder.mkdir(parents=True)
    for i in range(count):
        j = rng.randrange(len(seeds))
        _, data = mutate(blobs[j], rng, blobs[:j] + blobs[j + 1 :])
        (folder / f"m{i:04d}{seeds[j].suffix}").write_bytes(data)
    kernel = workdir / "k.npy"
    save_kernel(kernel, make_kernel("diagonal", 3))
    report = workdir / f"run{seed}.json"
    proc = subprocess.run(
        [
            str(exe),
            "restore",
            str(folder),
            "-k",
            str(kernel),
            "-o",
            str(workdir / f"out{seed}"),
            "--report",
            str(report),
            "--max-pixels",
            str(MAX_PIXELS),
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
        check=False,
    )
    problems = []
    rows = json.loads(report.read_text())["results"] if report.exists() else []
    failed = [r for r in rows if r["error"]]
    if not report.exists():
        problems.append("no report written")
    if proc.returncode != (1 if failed else 0):
        problems.append(f"exit code {proc.returncode} with {len(failed)} failed files")
    if "Traceback" in proc.stderr:
        problems.append("traceback on stderr")
    lines = proc.stderr.splitlines()
    per_file = [
        x
        for x in lines
        if x.startswith("error: ") and not x.startswith(f"error: {len(failed)} of ")
    ]
    if len(per_file) != len(failed):
        problems.append(f"{len(per_file)} error lines for {len(failed)} failed files")
    listed = [x for x in lines if x.startswith("  ")]
    if len(listed) != min(len(failed), 20) + (len(failed) > 20):
        problems.append(f"summary lists {len(listed)} failures of {len(failed)}")
    known = ("error: ", "warning: ", "note: ", "  ", f"{len(rows) - len(failed)} of ")
    strays = [x for x in lines if not x.startswith(known)]
    if strays:
        problems.append(f"unexpected stderr lines: {strays[:3]}")
    return {
        "inputs": count,
        "exit_code": proc.returncode,
        "failed": len(failed),
        "restored": len(rows) - len(failed),
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count", type=int, default=1000, help="mutants restored in-process"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--subprocess", type=int, default=3, help="real CLI runs on folders of mutants"
    )
    parser.add_argument(
        "--subprocess-count", type=int, default=40, help="mutants per CLI run"
    )
    parser.add_argument("--keep", type=Path, help="work here and keep the files")
    args = parser.parse_args(argv)

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="deblur-fuzz-"))
    try:
        stats = fuzz(args.count, args.seed, workdir / "inprocess")
        exe = deblur_exe()
        for r in range(args.subprocess if exe else 0):
            stats.subprocess_runs.append(
                fuzz_subprocess(
                    args.subprocess_count, args.seed + 1000 + r, workdir / "cli", exe
                )
            )
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(stats.summary(), indent=2))
    for line in stats.tracebacks + stats.problems + stats.unexpected:
        print(line, file=sys.stderr)
    bad = (
        stats.tracebacks
        or stats.problems
        or any(r["problems"] for r in stats.subprocess_runs)
    )
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
