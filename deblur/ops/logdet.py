"""The log-determinant of a causal convolution."""

from __future__ import annotations

import torch
from torch import Tensor

from .forms import classify_kernel, to_canonical

__all__ = ["log_abs_det"]


def log_abs_det(
    kernel: Tensor,
    height: int,
    width: int,
    channels: int | None = None,
    anchor: str = "bottom-right",
) -> Tensor:
    """Return ``log|det|`` of the causal convolution on one ``height x width`` image.

    Parameters
    ----------
    kernel : (kh, kw), (C, kh, kw) or (C, C, kh, kw) Tensor
        The kernel of :func:`causal_conv2d`.
    height, width : int
        Image size.
    channels : int, optional
        Channels of the image.  Needed for a ``(kh, kw)`` kernel, which acts on
        every channel (default 1); checked against the other forms.
    anchor : {"bottom-right", "bottom-left", "top-right", "top-left"}
        Corner holding the anchor tap.

    Returns
    -------
    logdet : () Tensor
        In the kernel's dtype, differentiable in ``kernel``; ``-inf`` for a
        singular kernel.

    Raises
    ------
    ValueError
        If the kernel's form does not fit ``channels`` or the size is negative.

    Notes
    -----
    In raster order (pixel by pixel, the channels of one pixel together) the
    operator is block lower triangular with the anchor block
    ``K[:, :, anchor]`` (a scalar per channel for depthwise kernels) on the
    diagonal, so ``log|det| = H * W * log|det(anchor block)|``: for a
    depthwise kernel ``H * W * sum_c log|anchor_c|``.  It does not depend on
    the other taps.  The formula holds for any anchor block, although the
    exact inverse only accepts a lower-triangular one.

    Examples
    --------
    >>> k = torch.tensor([[0.5, 0.5], [0.25, 2.0]])
    >>> log_abs_det(k, 3, 4, channels=2)  # 2 channels * 12 pixels * log 2
    tensor(16.6355)
    """
    if height < 0 or width < 0:
        raise ValueError(
            f"image size must be non-negative, got height={height}, width={width}"
        )
    if kernel.dim() == 2:
        classify_kernel(kernel)
    else:
        classify_kernel(kernel, channels)
    canon = to_canonical(kernel, anchor)

    if canon.dim() == 3:
        per_pixel = canon[:, -1, -1].abs().log().sum()
        if kernel.dim() == 2:
            per_pixel = per_pixel * (1 if channels is None else channels)
    else:
        per_pixel = torch.linalg.slogdet(canon[:, :, -1, -1]).logabsdet
    return height * width * per_pixel
