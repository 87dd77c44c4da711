"""The operator as a dense matrix: the float64 reference for tests and benchmarks.

Only for small images: the matrix has ``(C * H * W) ** 2`` entries.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .blur import causal_conv2d

__all__ = ["dense_matrix", "dense_inverse"]


def dense_matrix(
    kernel: Tensor, channels: int, height: int, width: int, anchor: str = "bottom-right"
) -> Tensor:
    """Return the ``(C*H*W, C*H*W)`` float64 matrix of ``causal_conv2d`` on one image.

    Built column by column from impulses, so it follows the operator's
    definition and nothing else.  Raster order: channel, row, column.
    """
    n = channels * height * width
    basis = torch.eye(n, dtype=torch.float64).reshape(n, channels, height, width)
    columns = causal_conv2d(basis, kernel.to(torch.float64), anchor)
    return columns.reshape(n, n).T.contiguous()


def dense_inverse(
    blurred: Tensor, kernel: Tensor, anchor: str = "bottom-right"
) -> Tensor:
    """Solve the causal system with ``torch.linalg.solve`` in float64 (the baseline)."""
    B, C, H, W = blurred.shape
    A = dense_matrix(kernel, C, H, W, anchor)
    rhs = blurred.to(torch.float64).reshape(B, -1).T
    return torch.linalg.solve(A, rhs).T.reshape(B, C, H, W).to(blurred.dtype)
