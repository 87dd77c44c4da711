"""The log-determinant of a causal convolution."""

from __future__ import annotations

import torch
from torch import Tensor

from .forms import classify_kernel, to_canonical

__all__ = ["log_abs_det"]


def log_abs_det(
    kernel: Tensor, height: int, width: int, channels: int | None = None,
    anchor: str = "bottom-right",
) -> Tensor:
    """Return ``log|det|`` of the causal convolution on one ``height x width`` image.

    Parameters
    ----------
    kernel : (kh, kw), (C, kh, kw) or (C, C, kh, kw) Tensor
    height, width : int
        Image size.
    channels : int, optional
        Channels a ``(kh, kw)`` kernel acts on (default 1); ignored otherwise.
    anchor : str
        Corner holding the anchor tap.

    Returns
    -------
    logdet : () Tensor
        Differentiable in ``kernel``.

    Notes
    -----
    The operator is triangular in raster order with the anchor taps on the
    diagonal, so ``log|det| = H * W * sum_c log|anchor_c|``.
    """
    classify_kernel(kernel)
    canon = to_canonical(kernel, anchor)
    if canon.dim() == 3:
        diag = canon[:, -1, -1]
        if kernel.dim() == 2:
            diag = diag.expand(channels or 1)
    else:
        diag = canon[:, :, -1, -1].diagonal()
    return height * width * diag.abs().log().sum()
