"""Compiled CPU solvers (numba): row-wise forward substitution.

All functions work on the canonical form (anchor bottom-right).  Per row, one
vectorisable pass subtracts the contribution of the previous ``kh - 1`` rows,
then a short recurrence over the row's own ``kw - 1`` left neighbours finishes
it (DESIGN.md section 4).  Planes run in parallel; when there are fewer planes
than threads, each plane is cut into column strips and row blocks that run as
a wavefront over blocks, so a single gray image still uses every core.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

__all__ = ["solve_depthwise", "solve_mixing", "kernel_grad_depthwise"]

_REDUCE = {"reassoc", "contract", "nsz"}


@njit(cache=True, nogil=True, boundscheck=False)
def _solve_block(y, kernel, x, p, kc, r0, r1, c0, c1):
    kh = kernel.shape[1]
    kw = kernel.shape[2]
    anchor = kernel[kc, kh - 1, kw - 1]
    acc = np.empty(c1 - c0, dtype=y.dtype)
    for i in range(r0, r1):
        for j in range(c0, c1):
            acc[j - c0] = y[p, i, j]
        # the previous kh - 1 rows, vectorised along the row
        for a in range(kh - 1):
            r = i - (kh - 1) + a
            if r < 0:
                continue
            for b in range(kw):
                w = kernel[kc, a, b]
                off = b - (kw - 1)
                start = max(c0, -off)
                for j in range(start, c1):
                    acc[j - c0] -= w * x[p, r, j + off]
        # the row's own left neighbours, a short recurrence
        for j in range(c0, c1):
            s = acc[j - c0]
            for b in range(kw - 1):
                jj = j - (kw - 1) + b
                if jj >= 0:
                    s -= kernel[kc, kh - 1, b] * x[p, i, jj]
            x[p, i, j] = s / anchor


@njit(parallel=True, cache=True, boundscheck=False)
def _solve_depthwise(y, kernel, x, strips, row_block):
    P, H, W = y.shape
    Ck = kernel.shape[0]
    rows = (H + row_block - 1) // row_block
    width = (W + strips - 1) // strips
    for step in range(rows + strips - 1):
        for task in prange(P * strips):
            p = task // strips
            s = task % strips
            r = step - s
            if r < 0 or r >= rows:
                continue
            c0 = s * width
            c1 = min(W, c0 + width)
            if c0 >= c1:
                continue
            r0 = r * row_block
            r1 = min(H, r0 + row_block)
            _solve_block(y, kernel, x, p, p % Ck, r0, r1, c0, c1)


@njit(cache=True, nogil=True, boundscheck=False)
def _solve_mixing_block(y, kernel, x, n, r0, r1, c0, c1):
    C = y.shape[1]
    kh = kernel.shape[2]
    kw = kernel.shape[3]
    acc = np.empty((C, c1 - c0), dtype=y.dtype)
    for i in range(r0, r1):
        for c in range(C):
            for j in range(c0, c1):
                acc[c, j - c0] = y[n, c, i, j]
        for c in range(C):
            for c_in in range(C):
                for a in range(kh - 1):
                    r = i - (kh - 1) + a
                    if r < 0:
                        continue
                    for b in range(kw):
                        w = kernel[c, c_in, a, b]
                        off = b - (kw - 1)
                        start = max(c0, -off)
                        for j in range(start, c1):
                            acc[c, j - c0] -= w * x[n, c_in, r, j + off]
        for j in range(c0, c1):
            for c in range(C):
                s = acc[c, j - c0]
                for c_in in range(C):
                    for b in range(kw - 1):
                        jj = j - (kw - 1) + b
                        if jj >= 0:
                            s -= kernel[c, c_in, kh - 1, b] * x[n, c_in, i, jj]
                for c_in in range(c):
                    s -= kernel[c, c_in, kh - 1, kw - 1] * x[n, c_in, i, j]
                x[n, c, i, j] = s / kernel[c, c, kh - 1, kw - 1]


@njit(parallel=True, cache=True, boundscheck=False)
def _solve_mixing(y, kernel, x, strips, row_block):
    B, C, H, W = y.shape
    rows = (H + row_block - 1) // row_block
    width = (W + strips - 1) // strips
    for step in range(rows + strips - 1):
        for task in prange(B * strips):
            n = task // strips
            s = task % strips
            r = step - s
            if r < 0 or r >= rows:
                continue
            c0 = s * width
            c1 = min(W, c0 + width)
            if c0 >= c1:
                continue
            r0 = r * row_block
            r1 = min(H, r0 + row_block)
            _solve_mixing_block(y, kernel, x, n, r0, r1, c0, c1)


@njit(parallel=True, cache=True, boundscheck=False, fastmath=_REDUCE)
def _kernel_grad_depthwise(grad, x, kh, kw, chunks, out):
    # out[task, a, b] = sum over the rows of one chunk of one plane of
    #   grad[p, i, j] * x[p, i - (kh-1) + a, j - (kw-1) + b]
    P, H, W = grad.shape
    rows = (H + chunks - 1) // chunks
    for task in prange(P * chunks):
        p = task // chunks
        r0 = (task % chunks) * rows
        r1 = min(H, r0 + rows)
        for i in range(r0, r1):
            for a in range(kh):
                r = i - (kh - 1) + a
                if r < 0:
                    continue
                for b in range(kw):
                    off = b - (kw - 1)
                    s = 0.0
                    for j in range(-off, W):
                        s += grad[p, i, j] * x[p, r, j + off]
                    out[task, a, b] += s


def _split(planes: int, width: int, height: int, kw: int) -> tuple[int, int]:
    """Choose column strips and a row block so every thread has work."""
    threads = numba.get_num_threads()
    if threads == 1 or planes % threads == 0 or planes >= 4 * threads:
        return 1, max(height, 1)
    strips = max(2, math.ceil(threads / planes))
    strips = max(1, min(strips, width // max(2 * kw, 16)))
    if strips == 1:
        return 1, max(height, 1)
    return strips, 32


def solve_depthwise(y: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Solve ``causal_conv(x, kernel) = y`` for ``x``, plane by plane.

    ``y`` is ``(P, H, W)``, ``kernel`` ``(Ck, kh, kw)``; plane ``p`` uses
    ``kernel[p % Ck]``.  Both C-contiguous, of one float dtype.
    """
    x = np.empty_like(y)
    P, H, W = y.shape
    if y.size:
        strips, row_block = _split(P, W, H, kernel.shape[2])
        _solve_depthwise(y, kernel, x, strips, row_block)
    return x


def solve_mixing(y: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Solve the channel-mixing system; ``y`` ``(B, C, H, W)``, ``kernel`` ``(C, C, kh, kw)``."""
    x = np.empty_like(y)
    B, C, H, W = y.shape
    if y.size:
        strips, row_block = _split(B, W, H, kernel.shape[3])
        _solve_mixing(y, kernel, x, strips, row_block)
    return x


def kernel_grad_depthwise(grad: np.ndarray, x: np.ndarray, Ck: int, kh: int, kw: int):
    """Correlate ``grad`` with the top-left padded ``x``, summed per kernel.

    Returns ``(Ck, kh, kw)``: ``sum_{p % Ck == c} sum_ij grad[p, i, j] *
    x_pad[p, i + a, j + b]``.  No scratch tensor of size image x kernel.
    """
    P, H, W = grad.shape
    threads = numba.get_num_threads()
    chunks = max(1, min(H, math.ceil(2 * threads / max(P, 1)))) if P < 2 * threads else 1
    out = np.zeros((P * chunks, kh, kw), dtype=np.float64)
    if grad.size:
        _kernel_grad_depthwise(grad, x, kh, kw, chunks, out)
    per_plane = out.reshape(P, chunks, kh, kw).sum(axis=1)
    return per_plane.reshape(P // Ck, Ck, kh, kw).sum(axis=0).astype(grad.dtype)
