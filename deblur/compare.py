"""Every restoration method on the same image, scored against its reference.

:func:`compare_file` runs the exact inverse and the regularised baselines of
:mod:`deblur.baselines` on one blurred image and returns one record per method
and the images for a side-by-side picture.  Like :func:`deblur.restore.restore_file`
it never raises for a bad file; the records say what went wrong.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from .kernel import Kernel, Stability
from .restore import METHODS, RestoreOptions, restore_array

__all__ = ["METHODS", "compare_file", "best_method"]


def _quantised(data: np.ndarray, bit_depth: int) -> np.ndarray:
    if bit_depth == 32:
        return data
    top = 2**bit_depth - 1
    return np.rint(np.clip(data, 0.0, 1.0) * top) / top


def _why_not_inverse(kernel: Kernel, stability: Stability | None) -> str | None:
    if kernel.anchor == "center":
        return "not run: a centred kernel has no exact causal inverse"
    if stability is not None and stability.verdict == "unstable":
        return f"not run: the kernel is unstable for the exact inverse (noise gain {stability.gain:.3g})"
    return None


def compare_file(
    source: Path,
    reference: Path,
    kernel: Kernel,
    methods=METHODS,
    *,
    params: dict[str, dict] | None = None,
    device: str = "cpu",
    stability: Stability | None = None,
    max_pixels: int | None = None,
) -> tuple[list[dict], list[tuple[str, np.ndarray]]]:
    """Restore ``source`` with each of ``methods`` and score each against ``reference``.

    Returns
    -------
    records : list of dict
        One per method (``input``, ``reference``, ``method``, ``psnr``,
        ``ssim``, ``seconds``, ``params``, ``error``), plus one for the blurred
        input itself (method ``"blurred"``).  Scores use the values the result
        would hold when written at the input's bit depth, with ``data_range``
        from that depth.
    panels : list of (label, image)
        Blurred, each method that ran, and the reference, labelled with PSNR,
        for :func:`deblur.plots.plot_comparison`.
    """
    from .imageio import ImageError, data_range, read_image
    from .metrics import psnr, ssim

    params = params or {}
    base = {"input": str(source), "reference": str(reference)}
    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    try:
        image = read_image(source, **kwargs)
        sharp = read_image(reference, **kwargs)
        if sharp.data.shape != image.data.shape:
            raise ValueError(
                f"{reference}: reference is {sharp.data.shape}, the input "
                f"{source} is {image.data.shape}; they must match"
            )
        kc = kernel.channels
        if kc is not None and kc != image.data.shape[2]:
            raise ValueError(
                f"{source}: the kernel has {kc} channels but the image has "
                f"{image.data.shape[2]}"
            )
    except (ImageError, ValueError, OSError) as exc:
        return [{**base, "method": None, "error": str(exc).splitlines()[0]}], []

    top = float(data_range(image))
    truth = sharp.data

    def score(result: np.ndarray) -> tuple[float, float]:
        return (
            psnr(truth * top, result * top, data_range=top),
            ssim(truth * top, result * top, data_range=top),
        )

    p0, s0 = score(image.data)
    records = [
        {
            **base,
            "method": "blurred",
            "psnr": p0,
            "ssim": s0,
            "seconds": 0.0,
            "params": {},
            "error": None,
            "data_range": top,
        }
    ]
    panels = [(f"blurred {p0:.2f} dB", image.data)]
    options = RestoreOptions(kernel=kernel, device=device, stability=stability)
    for method in methods:
        record = {
            **base,
            "method": method,
            "psnr": None,
            "ssim": None,
            "seconds": None,
            "params": {},
            "error": None,
            "data_range": top,
        }
        why = _why_not_inverse(kernel, stability) if method == "inverse" else None
        if why:
            record["error"] = why
            records.append(record)
            continue
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out, used = restore_array(
                    image.data,
                    replace(options, method=method, params=params.get(method, {})),
                )
            if not np.all(np.isfinite(out)):
                raise ValueError("the result has non-finite values")
        except (ValueError, RuntimeError, FloatingPointError) as exc:
            record["error"] = f"{method} failed: {str(exc).splitlines()[0]}"
            records.append(record)
            continue
        record["seconds"] = time.perf_counter() - start
        record["params"] = used
        shown = _quantised(out, image.bit_depth)
        record["psnr"], record["ssim"] = score(shown)
        records.append(record)
        panels.append((f"{method} {record['psnr']:.2f} dB", np.clip(shown, 0, 1)))
    panels.append(("reference", truth))
    best = best_method(records)
    for r in records:
        r["best"] = r["method"] == best
    return records, panels


def best_method(records: list[dict]) -> str | None:
    """The method with the highest PSNR (the blurred input does not compete)."""
    scored = [
        r for r in records if r.get("psnr") is not None and r["method"] != "blurred"
    ]
    if not scored:
        return None
    return max(scored, key=lambda r: r["psnr"])["method"]
