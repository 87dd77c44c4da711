"""Making test data: blurring images with the same operator that deblur inverts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .imageio import read_image, write_image
from .kernel import Kernel
from .ops import causal_conv2d

__all__ = ["blur_array", "blur_file"]


def blur_array(
    data: np.ndarray, kernel: Kernel, noise: float = 0.0, seed: int | None = 0
) -> np.ndarray:
    """Blur a float ``(H, W, C)`` array by ``kernel`` and add white noise of std ``noise``.

    A corner anchor uses :func:`deblur.causal_conv2d`; ``anchor="center"``
    a centred correlation with zero padding (odd kernel sizes).  Values are not
    clipped here; writing to an integer file clips and counts them.
    """
    image = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1)))[None]
    weights = kernel.tensor(torch.float64)
    C = image.shape[1]
    if kernel.channels is not None and kernel.channels != C:
        raise ValueError(
            f"the kernel has {kernel.channels} channels (shape {kernel.shape}) but "
            f"the image has {C}"
        )
    if kernel.anchor == "center":
        kh, kw = kernel.kernel_size
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(
                f"a centred kernel needs odd sizes, got {kh}x{kw}; pad it by one "
                "row or column of zeros"
            )
        if weights.dim() == 4:
            raise ValueError("a centred channel-mixing kernel is not supported")
        w = (
            weights.expand(C, kh, kw).unsqueeze(1)
            if weights.dim() == 2
            else weights.unsqueeze(1)
        )
        padded = F.pad(image, (kw // 2, kw // 2, kh // 2, kh // 2))
        out = F.conv2d(padded, w, groups=C)
    else:
        out = causal_conv2d(image, weights, kernel.anchor)
    result = out[0].permute(1, 2, 0).numpy()
    if noise > 0:
        rng = np.random.default_rng(seed)
        result = result + rng.normal(0.0, noise, size=result.shape)
    return result


def blur_file(
    source: Path,
    output: Path,
    kernel: Kernel,
    *,
    noise: float = 0.0,
    bit_depth="same",
    seed: int | None = 0,
    overwrite: bool = False,
    max_pixels: int | None = None,
) -> dict:
    """Blur one image file into ``output`` and return its record; never raise.

    The record holds ``input``, ``output`` (``None`` unless written), the
    share of ``clipped`` values, ``seconds``, ``error`` (one line naming the
    file, ``None`` when it went well) and ``notes`` (conversions on reading).
    ``max_pixels`` as for :class:`deblur.restore.RestoreOptions` (0 lifts the
    limit).  The output is written atomically; only an interruption passes
    through, with the partial record as ``exc.record``.
    """
    import time

    from .restore import _interrupted, file_error

    source, output = Path(source), Path(output)
    start = time.perf_counter()
    record = {
        "input": str(source),
        "output": None,
        "clipped": None,
        "seconds": None,
        "error": None,
        "notes": [],
    }
    stage = "checking"
    try:
        if output.exists() and not overwrite:
            raise ValueError(f"{output}: output exists; pass --overwrite to replace it")
        if output.resolve() == source.resolve():
            raise ValueError(f"{output}: output would overwrite its input")
        stage = "reading"
        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels or None}
        image = read_image(source, **kwargs)
        record["notes"] += list(image.notes)
        stage = "blurring"
        blurred = blur_array(image.data, kernel, noise, seed)
        stage = "writing"
        output.parent.mkdir(parents=True, exist_ok=True)
        info = write_image(
            output, blurred, like=image, bit_depth=bit_depth, overwrite=overwrite
        )
        record["output"] = str(output)
        record["clipped"] = info.clipped / max(info.total, 1)
    except Exception as exc:  # noqa: BLE001 - any failure is this file's one line
        record["error"] = file_error(exc, stage, source, output, record)
    except BaseException as exc:
        _interrupted(exc, record, stage, start)
        raise
    record["seconds"] = time.perf_counter() - start
    return record
