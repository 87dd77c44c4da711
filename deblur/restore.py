"""Restoring one image file: a pure function of its paths and options.

:func:`restore_file` reads a blurred image, undoes the blur, writes the result
and scores it against a reference, and returns one report record.  It never
raises for a bad file: the record's ``error`` says what went wrong, so a batch
can be mapped by any executor and one bad file never stops the others.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .kernel import Kernel, Stability
from .ops import inverse_causal_conv2d

log = logging.getLogger(__name__)

__all__ = ["METHODS", "RestoreOptions", "restore_array", "restore_file", "resolve_device"]

METHODS = ("inverse", "wiener", "unsupervised-wiener", "richardson-lucy")


class RestoreError(ValueError):
    """One file that could not be restored; the message is one line."""


@dataclass(frozen=True)
class RestoreOptions:
    """What to do with every file of a batch."""

    kernel: Kernel
    method: str = "inverse"
    device: str = "cpu"
    bit_depth: str | int = "same"
    overwrite: bool = False
    params: dict = field(default_factory=dict)
    stability: Stability | None = None
    max_pixels: int | None = None


def resolve_device(name: str) -> str:
    """Turn ``auto|cpu|cuda`` into a usable torch device name.

    Raises
    ------
    ValueError
        If ``cuda`` is asked for and torch sees no CUDA device.
    """
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {name} asked for, but torch sees no CUDA device "
                f"(torch {torch.__version__}, CUDA build: "
                f"{torch.version.cuda or 'no'}); use --device cpu"
            )
        return name
    raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")


def restore_array(data: np.ndarray, options: RestoreOptions) -> tuple[np.ndarray, dict]:
    """Undo the blur on a float ``(H, W, C)`` array; return it and the parameters used."""
    kernel = options.kernel
    if options.method == "inverse":
        dtype = torch.float64 if options.device == "cpu" else torch.float32
        image = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1)))[None]
        image = image.to(device=options.device, dtype=dtype)
        weights = kernel.tensor(dtype, options.device)
        restored = inverse_causal_conv2d(image, weights, kernel.anchor)
        out = restored[0].permute(1, 2, 0).to("cpu", torch.float64).numpy()
        return out, {}
    from .baselines import deconvolve

    return deconvolve(data, kernel.weights, options.method, anchor=kernel.anchor, **options.params)


def _quantised(data: np.ndarray, bit_depth: int) -> np.ndarray:
    """The values a file of ``bit_depth`` bits will hold, on the [0, 1] scale."""
    if bit_depth == 32:
        return data
    top = 2**bit_depth - 1
    return np.rint(np.clip(data, 0.0, 1.0) * top) / top


def _score(record: dict, sharp: np.ndarray, blurred: np.ndarray, restored: np.ndarray, top: float):
    from .metrics import psnr, ssim

    record["psnr_before"] = psnr(sharp * top, blurred * top, data_range=top)
    record["psnr_after"] = psnr(sharp * top, restored * top, data_range=top)
    record["ssim_before"] = ssim(sharp * top, blurred * top, data_range=top)
    record["ssim_after"] = ssim(sharp * top, restored * top, data_range=top)


def _output_depth(bit_depth, image) -> int:
    if bit_depth == "same":
        return image.bit_depth
    if bit_depth == "float32":
        return 32
    return int(bit_depth)


def restore_file(
    source: Path,
    output: Path,
    options: RestoreOptions,
    reference: Path | None = None,
    reference_error: str | None = None,
) -> dict:
    """Restore one file and return its report record (never raises for bad input).

    The record holds ``input``, ``output``, ``reference``, the size, PSNR and
    SSIM of the blurred and of the restored image against the reference
    (``data_range`` from the input's bit depth), the share of ``clipped``
    values, ``seconds`` and ``error`` (``None`` when it went well).  Nothing is
    written when the solve fails or yields non-finite values.
    """
    from .imageio import ImageError, data_range, read_image, write_image

    start = time.perf_counter()
    record = {
        "input": str(source),
        "output": None,
        "reference": str(reference) if reference else None,
        "method": options.method,
        "psnr_before": None,
        "psnr_after": None,
        "ssim_before": None,
        "ssim_after": None,
        "data_range": None,
        "clipped": None,
        "seconds": None,
        "error": None,
        "notes": [],
    }
    try:
        if output.exists() and not options.overwrite:
            raise RestoreError(f"{output}: output exists; pass --overwrite to replace it")
        if output.resolve() == source.resolve():
            raise RestoreError(f"{output}: output would overwrite its input; choose another --out")
        kwargs = {} if options.max_pixels is None else {"max_pixels": options.max_pixels}
        image = read_image(source, **kwargs)
        H, W, C = image.data.shape
        record.update(width=W, height=H, channels=C, bit_depth=image.bit_depth)
        record["notes"] += list(image.notes)
        record["data_range"] = data_range(image)
        kc = options.kernel.channels
        if kc is not None and kc != C:
            raise RestoreError(
                f"{source}: the kernel has {kc} channels (shape "
                f"{options.kernel.shape}) but the image has {C}; use a (kh, kw) "
                "kernel or one with a kernel per channel of this image"
            )

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            restored, used = restore_array(image.data, options)
        if used:
            record["params"] = used
        if not np.all(np.isfinite(restored)):
            gain = options.stability.gain if options.stability else float("nan")
            raise RestoreError(
                f"{source}: the solve gave non-finite values (kernel noise gain "
                f"{gain:.3g}); nothing written, check the kernel and its --anchor"
            )

        depth = _output_depth(options.bit_depth, image)
        info = write_image(output, restored, like=image, bit_depth=options.bit_depth)
        record["output"] = str(output)
        record["clipped"] = info.clipped / max(info.total, 1)
        if info.clipped:
            record["notes"].append(
                f"{info.clipped} of {info.total} values outside [0, 1] clipped"
            )

        if reference is not None:
            try:
                sharp = read_image(reference, **kwargs)
            except ImageError as exc:
                record["notes"].append(f"reference not scored: {exc}")
                record["reference_error"] = str(exc)
            else:
                if sharp.data.shape != image.data.shape:
                    msg = (
                        f"reference {reference} is {sharp.data.shape[1]}x"
                        f"{sharp.data.shape[0]}x{sharp.data.shape[2]}, the input "
                        f"is {W}x{H}x{C}; not scored"
                    )
                    record["notes"].append(msg)
                    record["reference_error"] = msg
                else:
                    top = float(record["data_range"])
                    _score(record, sharp.data, image.data, _quantised(restored, depth), top)
        elif reference_error:
            record["notes"].append(reference_error)
    except (RestoreError, ImageError, ValueError, OSError) as exc:
        record["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    record["seconds"] = time.perf_counter() - start
    for key in ("psnr_before", "psnr_after"):
        v = record[key]
        if v is not None and not math.isfinite(v):
            record["notes"].append(f"{key} is infinite: identical to the reference")
    return record
