"""Torch-ops wavefront solver: the device-agnostic reference and fallback.

Pixel ``(i, j)`` of the canonical system (anchor bottom-right) depends only on
pixels above and to the left of it, so every pixel of one anti-diagonal
``d = i + j`` depends only on earlier anti-diagonals (Nagar & Varma 2025,
section 3; DESIGN.md section 4).  The solver takes ``H + W - 1`` steps, each a
handful of torch ops over a whole diagonal of every plane at once.

The solution lives in a *skewed* buffer ``S`` of shape
``(planes, D + kh + kw - 2, H + kh - 1)``, ``D = H + W - 1``, where row
``d + kh + kw - 2`` holds anti-diagonal ``d`` indexed by the image row::

    S[p, d + (kh - 1) + (kw - 1), i + (kh - 1)] = x[p, i, d - i]

In that layout the tap ``(a, b)`` of pixel ``(i, d - i)`` sits at
``S[p, d + a + b, i + a]``: a flat offset ``d * Hs + i + a * (Hs + 1) + b * Hs``
with ``Hs = H + kh - 1``.  All taps of one diagonal are therefore one strided
view, ``(planes, kh, kw, length)``, and one multiply and one sum give every
pixel of the diagonal.  Entries that stand for pixels outside the image are
never written and stay zero, which is the zero padding of the operator.  The
equations are first divided by the anchor, and each diagonal's row holds
``y / anchor`` until it is solved: with weight 1 on the anchor tap and
``-K / anchor`` on the others, that one sum *is* the forward substitution
``x = (y - sum_(a, b) != anchor K[a, b] x[...]) / anchor``.

The work is ``O(H W kh kw)`` per plane (times ``C`` for a mixing kernel), the
same as forward substitution; what it adds is ``H + W - 1`` sequential steps,
each a few kernel launches on a GPU.  It is the naive parallel baseline for
the single-launch Triton kernel in :mod:`deblur.ops._triton`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["solve_depthwise", "solve_mixing"]


def _skew_index(
    height: int, width: int, kh: int, kw: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Map every pixel ``(i, j)`` to its ``(row, column)`` in the skewed buffer."""
    i = torch.arange(height, device=device).view(-1, 1).expand(height, width)
    j = torch.arange(width, device=device).view(1, -1).expand(height, width)
    return (i + j + (kh - 1) + (kw - 1)).reshape(-1), (i + (kh - 1)).reshape(-1)


def _diagonal_span(d: int, height: int, width: int) -> tuple[int, int]:
    """First row and number of pixels of anti-diagonal ``d``."""
    first = max(0, d - width + 1)
    last = min(height - 1, d)
    return first, last - first + 1


def _taps(buffer: Tensor, d: int, first: int, length: int, kh: int, kw: int) -> Tensor:
    """Strided view ``(..., kh, kw, length)`` of every tap of one diagonal.

    ``buffer`` is a contiguous skewed buffer ``(..., D + kh + kw - 2, Hs)``;
    the view's element ``[..., a, b, t]`` is the tap ``(a, b)`` of the pixel in
    row ``first + t`` of anti-diagonal ``d``.
    """
    hs = buffer.shape[-1]
    lead = buffer.shape[:-2]
    lead_strides = [buffer.stride(k) for k in range(len(lead))]
    return buffer.as_strided(
        (*lead, kh, kw, length),
        (*lead_strides, hs + 1, hs, 1),
        buffer.storage_offset() + d * hs + first,
    )


def solve_depthwise(y: Tensor, kernel: Tensor) -> Tensor:
    """Solve ``causal_conv(x, kernel[p % Ck]) = y[p]`` for every plane ``p``.

    Parameters
    ----------
    y : (P, H, W) Tensor
        The blurred planes, float32 or float64, on any device.
    kernel : (Ck, kh, kw) Tensor
        Canonical kernels (anchor ``kernel[:, -1, -1]``, non-zero); ``P`` must
        be a multiple of ``Ck`` and plane ``p`` uses ``kernel[p % Ck]``.

    Returns
    -------
    x : (P, H, W) Tensor
        The solution, same dtype and device as ``y``.
    """
    P, H, W = y.shape
    Ck, kh, kw = kernel.shape
    kernel = kernel.to(device=y.device, dtype=y.dtype)
    if y.numel() == 0:
        return torch.empty_like(y, memory_format=torch.contiguous_format)

    # unit anchor: x = y / anchor - sum_(a, b) != anchor (K / anchor) * x
    anchor = kernel[:, -1, -1].reshape(Ck, 1, 1)
    weights = -kernel / anchor
    weights[:, -1, -1] = 1.0
    weights = weights.reshape(1, Ck, kh, kw, 1)

    # skew, planes grouped by the kernel they use: (G, Ck, rows, Hs); each
    # diagonal's row starts out holding y / anchor, read by the anchor tap
    G = P // Ck
    rows, cols = _skew_index(H, W, kh, kw, y.device)
    x_skew = y.new_zeros(G, Ck, H + W - 1 + kh + kw - 2, H + kh - 1)
    x_skew[:, :, rows, cols] = (y.reshape(G, Ck, H, W) / anchor).reshape(G, Ck, -1)

    # one step per anti-diagonal, over every plane at once
    for d in range(H + W - 1):
        first, length = _diagonal_span(d, H, W)
        taps = _taps(x_skew, d, first, length, kh, kw)
        row = d + kh + kw - 2
        start = first + kh - 1
        x_skew[:, :, row, start : start + length] = (taps * weights).sum((2, 3))

    # unskew
    return x_skew[:, :, rows, cols].reshape(P, H, W)


def solve_mixing(y: Tensor, kernel: Tensor) -> Tensor:
    """Solve the channel-mixing system ``sum_c' conv(x[:, c'], K[c, c']) = y[:, c]``.

    Parameters
    ----------
    y : (B, C, H, W) Tensor
        The blurred images, float32 or float64, on any device.
    kernel : (C, C, kh, kw) Tensor
        Canonical mixing kernel (out, in); its anchor block
        ``kernel[:, :, -1, -1]`` is lower triangular with a non-zero diagonal.

    Returns
    -------
    x : (B, C, H, W) Tensor
        The solution, same dtype and device as ``y``.

    Notes
    -----
    Within one diagonal step the channels are resolved in order ``0 .. C-1``:
    channel ``c`` of a pixel also depends on channels ``c' < c`` of the same
    pixel through the anchor block.  A step holds a ``(B, C, C, kh, kw,
    length)`` product, 28 MB in float32 for ``C = 12``, a 7x7 kernel and a
    1024-pixel diagonal.
    """
    B, C, H, W = y.shape
    kh, kw = kernel.shape[-2:]
    kernel = kernel.to(device=y.device, dtype=y.dtype)
    if y.numel() == 0:
        return torch.empty_like(y, memory_format=torch.contiguous_format)

    # unit diagonal: divide equation c by its anchor K[c, c, -1, -1]; the
    # anchor block is applied channel by channel, so the contraction uses
    # the identity there and reads y back through it
    diagonal = kernel[:, :, -1, -1].diagonal().reshape(C, 1, 1, 1)
    scaled = kernel / diagonal
    block = scaled[:, :, -1, -1].tril(-1)
    weights = -scaled
    weights[:, :, -1, -1] = torch.eye(C, dtype=y.dtype, device=y.device)
    weights = weights.reshape(1, C, C, kh, kw, 1)
    block = block.reshape(C, C, 1)

    # skew, (B, C, rows, Hs); each diagonal's row starts out holding y
    rows, cols = _skew_index(H, W, kh, kw, y.device)
    x_skew = y.new_zeros(B, C, H + W - 1 + kh + kw - 2, H + kh - 1)
    x_skew[:, :, rows, cols] = (y / diagonal.reshape(1, C, 1, 1)).reshape(B, C, -1)

    for d in range(H + W - 1):
        first, length = _diagonal_span(d, H, W)
        row = d + kh + kw - 2
        span = slice(first + kh - 1, first + kh - 1 + length)

        # earlier diagonals, every channel at once
        taps = _taps(x_skew, d, first, length, kh, kw)
        acc = (taps.unsqueeze(1) * weights).sum((2, 3, 4))

        # the anchor block, strictly lower triangular now: channels in order
        for c in range(1, C):
            acc[:, c] -= (block[c, :c] * acc[:, :c]).sum(1)
        x_skew[:, :, row, span] = acc

    return x_skew[:, :, rows, cols].reshape(B, C, H, W)
