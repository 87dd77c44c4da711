"""The forward operator: a causal convolution, zero padded on the top and left.

Every part of deblur follows one definition (DESIGN.md section 2). For a kernel
``K`` of size ``kh x kw`` with its anchor in the bottom-right corner::

    y[i, j] = sum_{a < kh, b < kw} K[a, b] * x[i - (kh-1) + a, j - (kw-1) + b]

with ``x = 0`` outside the image.  An anchor in another corner is the same
operator on a spatially flipped image and kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .forms import classify_kernel, flip_dims, to_canonical

__all__ = ["causal_conv2d", "causal_conv2d_canonical"]


def causal_conv2d_canonical(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Blur ``(B, C, H, W)`` by a canonical (bottom-right anchor) kernel.

    ``kernel`` is ``(Ck, kh, kw)`` depthwise (``Ck`` is 1 or ``C``) or
    ``(C, C, kh, kw)`` channel mixing.
    """
    B, C, H, W = image.shape
    kh, kw = kernel.shape[-2:]
    padded = F.pad(image, (kw - 1, 0, kh - 1, 0))
    if kernel.dim() == 4:
        return F.conv2d(padded, kernel)
    weight = kernel.expand(C, kh, kw).unsqueeze(1)
    return F.conv2d(padded, weight, groups=C)


def causal_conv2d(
    image: torch.Tensor, kernel: torch.Tensor, anchor: str = "bottom-right"
) -> torch.Tensor:
    """Blur an image with a causal kernel (the operator deblur inverts).

    Parameters
    ----------
    image : (B, C, H, W) Tensor
        Floating-point image, any value range.
    kernel : (kh, kw), (C, kh, kw) or (C, C, kh, kw) Tensor
        Blur kernel (PSF): one for every channel, one per channel, or a
        channel-mixing kernel ``(out, in, kh, kw)``.
    anchor : {"bottom-right", "bottom-left", "top-right", "top-left"}
        The corner of the kernel array that holds the anchor tap, the tap that
        multiplies the pixel itself.

    Returns
    -------
    blurred : (B, C, H, W) Tensor
        Same size as ``image``.

    Notes
    -----
    Zero padding on the two sides away from the anchor only, so the output has
    the input's size and each output pixel depends on input pixels on the
    anchor's side of it.

    Examples
    --------
    An impulse smears down and to the right of where it was:

    >>> x = torch.zeros(1, 1, 3, 3); x[0, 0, 0, 0] = 1.0
    >>> k = torch.tensor([[0.5, 0.0], [0.0, 1.0]])
    >>> causal_conv2d(x, k)[0, 0]
    tensor([[1.0000, 0.0000, 0.0000],
            [0.0000, 0.5000, 0.0000],
            [0.0000, 0.0000, 0.0000]])
    """
    classify_kernel(kernel, image.shape[1])
    dims = flip_dims(anchor)
    canon = to_canonical(kernel.to(image.dtype), anchor)
    if dims:
        image = image.flip(dims)
    out = causal_conv2d_canonical(image, canon)
    if dims:
        out = out.flip(dims)
    return out
