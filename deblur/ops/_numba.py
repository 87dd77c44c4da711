"""Compiled CPU solvers (numba): row-wise forward substitution.

All functions work on the canonical form (anchor bottom-right).  Per row, one
vectorised pass subtracts the contribution of the previous ``kh - 1`` rows,
then a short recurrence over the row's own ``kw - 1`` left neighbours finishes
it (DESIGN.md section 4).  Planes run in parallel; when there are fewer planes
than threads, each plane is cut into column strips and row blocks that run as
a wavefront over blocks, so a single gray image still uses every core.

The same code solves the transposed (anti-causal) system when ``transpose`` is
true: it then walks the image from the bottom-right corner, which is the
causal solve in the frame flipped in both spatial axes (and, for a mixing
kernel, in the channels too), without copying anything into that frame.

Notes
-----
Speed-relevant choices, measured on two cores (see ``deblur bench``):

* The kernel is divided by its anchor once, so the recurrence carries one
  fused multiply-add per pixel on its critical path and no division.
* For ``kw <= 7`` the recurrence keeps the row's last ``kw - 1`` values in
  registers (unused taps are zero, which leaves a finite sum unchanged): a
  value read back from memory right after it was stored costs a
  store-to-load forwarding delay on every pixel.
* ``fastmath`` is limited to ``contract`` (fusing ``a - w * x`` into one
  rounding) in the solves; only the kernel gradient's dot products, whose
  order is arbitrary anyway, may be reassociated so that they vectorise.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

__all__ = ["solve_depthwise", "solve_mixing", "kernel_grad_depthwise"]

# FMA contraction only: no reassociation in the recurrences.
_SOLVE = {"contract"}
# The kernel gradient's dot products may be summed in any order.
_REDUCE = {"reassoc", "contract", "nsz"}
# Column strips narrower than this do not pay for the extra wavefront steps.
_MIN_STRIP = 64
# Rows per wavefront step when a plane is cut into strips.
_ROW_BLOCK = 32


@njit(cache=True, nogil=True, boundscheck=False, fastmath=_SOLVE)
def _subtract_row(acc, row, weights, c0, c1, transpose):
    # acc[t] -= sum_b weights[b] * row[j - (kw-1) + b] for the frame columns
    # j in [c0, c1) of one earlier row; acc[t] holds frame column c0 + t, or
    # c1 - 1 - t when transposing (then row is stored right to left).
    W = row.shape[0]
    kw = weights.shape[0]
    e = min(max(c0, kw - 1), c1)

    # the first kw - 1 columns of the image see only part of the kernel
    for j in range(c0, e):
        t = c1 - 1 - j if transpose else j - c0
        s = acc[t]
        for b in range(kw - 1 - j, kw):
            q = W - 1 - j + (kw - 1 - b) if transpose else j - (kw - 1 - b)
            s -= weights[b] * row[q]
        acc[t] = s

    # the rest, up to four taps per pass; slices indexed from 0 vectorise
    nb = c1 - e
    if nb <= 0:
        return
    dst = acc[:nb] if transpose else acc[e - c0 :]
    base = W - c1 + kw - 1 if transpose else e - (kw - 1)
    sign = -1 if transpose else 1
    b = 0
    while b < kw:
        o0 = base + sign * b
        if kw - b >= 4:
            w0, w1, w2, w3 = weights[b], weights[b + 1], weights[b + 2], weights[b + 3]
            s0 = row[o0 : o0 + nb]
            s1 = row[o0 + sign : o0 + sign + nb]
            s2 = row[o0 + 2 * sign : o0 + 2 * sign + nb]
            s3 = row[o0 + 3 * sign : o0 + 3 * sign + nb]
            for t in range(nb):
                dst[t] = dst[t] - w0 * s0[t] - w1 * s1[t] - w2 * s2[t] - w3 * s3[t]
            b += 4
        elif kw - b >= 2:
            w0, w1 = weights[b], weights[b + 1]
            s0 = row[o0 : o0 + nb]
            s1 = row[o0 + sign : o0 + sign + nb]
            for t in range(nb):
                dst[t] = dst[t] - w0 * s0[t] - w1 * s1[t]
            b += 2
        else:
            w0 = weights[b]
            s0 = row[o0 : o0 + nb]
            for t in range(nb):
                dst[t] -= w0 * s0[t]
            b += 1


@njit(cache=True, nogil=True, boundscheck=False, fastmath=_SOLVE)
def _rows_depthwise(y, kernel, scale, x, p, kc, r0, r1, c0, c1, transpose):
    # Solve rows [r0, r1) x columns [c0, c1) of plane p in the solve's frame
    # (flipped in both axes when transposing), with kernel[kc] already divided
    # by its anchor and scale[kc] = 1 / anchor.
    H = y.shape[1]
    W = y.shape[2]
    kh = kernel.shape[1]
    kw = kernel.shape[2]
    m = kw - 1
    n = c1 - c0
    step = -1 if transpose else 1
    q0 = W - c1 if transpose else c0  # first stored column of the strip
    first = W - 1 - c0 if transpose else c0  # stored column of frame column c0
    inv = scale[kc]
    zero = y.dtype.type(0)
    acc = np.empty(n, dtype=y.dtype)

    # the row's own taps, nearest first: h1 multiplies the left neighbour
    h1 = kernel[kc, kh - 1, kw - 2] if m >= 1 else zero
    h2 = kernel[kc, kh - 1, kw - 3] if m >= 2 else zero
    h3 = kernel[kc, kh - 1, kw - 4] if m >= 3 else zero
    h4 = kernel[kc, kh - 1, kw - 5] if m >= 4 else zero
    h5 = kernel[kc, kh - 1, kw - 6] if m >= 5 else zero
    h6 = kernel[kc, kh - 1, kw - 7] if m >= 6 else zero

    for i in range(r0, r1):
        ri = H - 1 - i if transpose else i
        for t in range(n):
            acc[t] = y[p, ri, q0 + t] * inv

        # the previous kh - 1 rows, vectorised along the row
        for a in range(kh - 1):
            r = i - (kh - 1) + a
            if r >= 0:
                rr = H - 1 - r if transpose else r
                _subtract_row(acc, x[p, rr], kernel[kc, a], c0, c1, transpose)

        # the row's own left neighbours: a recurrence, far taps first
        if m <= 6:
            p1 = x[p, ri, first - step] if c0 >= 1 and m >= 1 else zero
            p2 = x[p, ri, first - 2 * step] if c0 >= 2 and m >= 2 else zero
            p3 = x[p, ri, first - 3 * step] if c0 >= 3 and m >= 3 else zero
            p4 = x[p, ri, first - 4 * step] if c0 >= 4 and m >= 4 else zero
            p5 = x[p, ri, first - 5 * step] if c0 >= 5 and m >= 5 else zero
            p6 = x[p, ri, first - 6 * step] if c0 >= 6 and m >= 6 else zero
            for t in range(n):
                jq = first + step * t
                v = acc[jq - q0] - h6 * p6
                v = v - h5 * p5
                v = v - h4 * p4
                v = v - h3 * p3
                v = v - h2 * p2
                v = v - h1 * p1
                x[p, ri, jq] = v
                p6 = p5
                p5 = p4
                p4 = p3
                p3 = p2
                p2 = p1
                p1 = v
        else:
            for t in range(n):
                jq = first + step * t
                v = acc[jq - q0]
                for d in range(min(m, c0 + t), 0, -1):
                    v -= kernel[kc, kh - 1, kw - 1 - d] * x[p, ri, jq - step * d]
                x[p, ri, jq] = v


@njit(parallel=True, cache=True, boundscheck=False)
def _solve_depthwise(y, kernel, scale, x, strips, row_block, transpose):
    P, H, W = y.shape
    Ck = kernel.shape[0]
    rows = (H + row_block - 1) // row_block
    width = (W + strips - 1) // strips
    # block (r, s) needs (r - 1, s), (r, s - 1) and (r - 1, s - 1): a wavefront
    for wave in range(rows + strips - 1):
        for task in prange(P * strips):
            p = task // strips
            s = task % strips
            r = wave - s
            if r < 0 or r >= rows:
                continue
            c0 = s * width
            c1 = min(W, c0 + width)
            if c0 >= c1:
                continue
            r0 = r * row_block
            r1 = min(H, r0 + row_block)
            _rows_depthwise(y, kernel, scale, x, p, p % Ck, r0, r1, c0, c1, transpose)


@njit(cache=True, nogil=True, boundscheck=False, fastmath=_SOLVE)
def _rows_mixing(y, kernel, scale, x, n, r0, r1, c0, c1, transpose):
    # As _rows_depthwise for image n of a (B, C, H, W) system; kernel[c] is
    # divided by its anchor K[c, c], channels run backwards when transposing.
    C = y.shape[1]
    H = y.shape[2]
    W = y.shape[3]
    kh = kernel.shape[2]
    kw = kernel.shape[3]
    m = kw - 1
    cols = c1 - c0
    step = -1 if transpose else 1
    q0 = W - c1 if transpose else c0
    first = W - 1 - c0 if transpose else c0
    acc = np.empty((C, cols), dtype=y.dtype)

    for i in range(r0, r1):
        ri = H - 1 - i if transpose else i
        for c in range(C):
            cq = C - 1 - c if transpose else c
            inv = scale[c]
            for t in range(cols):
                acc[c, t] = y[n, cq, ri, q0 + t] * inv

        # the previous kh - 1 rows of every input channel
        for c in range(C):
            for ci in range(C):
                cj = C - 1 - ci if transpose else ci
                for a in range(kh - 1):
                    r = i - (kh - 1) + a
                    if r >= 0:
                        rr = H - 1 - r if transpose else r
                        _subtract_row(
                            acc[c], x[n, cj, rr], kernel[c, ci, a], c0, c1, transpose
                        )

        # the row's left neighbours, then the lower-triangular anchor block
        for t in range(cols):
            jq = first + step * t
            reach = min(m, c0 + t)
            for c in range(C):
                v = acc[c, jq - q0]
                for ci in range(C):
                    cj = C - 1 - ci if transpose else ci
                    for d in range(reach, 0, -1):
                        v -= kernel[c, ci, kh - 1, kw - 1 - d] * x[n, cj, ri, jq - step * d]
                for ci in range(c):
                    cj = C - 1 - ci if transpose else ci
                    v -= kernel[c, ci, kh - 1, kw - 1] * x[n, cj, ri, jq]
                cq = C - 1 - c if transpose else c
                x[n, cq, ri, jq] = v


@njit(parallel=True, cache=True, boundscheck=False)
def _solve_mixing(y, kernel, scale, x, strips, row_block, transpose):
    B, C, H, W = y.shape
    rows = (H + row_block - 1) // row_block
    width = (W + strips - 1) // strips
    for wave in range(rows + strips - 1):
        for task in prange(B * strips):
            n = task // strips
            s = task % strips
            r = wave - s
            if r < 0 or r >= rows:
                continue
            c0 = s * width
            c1 = min(W, c0 + width)
            if c0 >= c1:
                continue
            r0 = r * row_block
            r1 = min(H, r0 + row_block)
            _rows_mixing(y, kernel, scale, x, n, r0, r1, c0, c1, transpose)


@njit(parallel=True, cache=True, boundscheck=False, fastmath=_REDUCE)
def _kernel_grad_depthwise(grad, x, kh, kw, chunks, out):
    # out[task, a, b] = sum over the rows of one chunk of one plane of
    #   grad[p, i, j] * x[p, i - (kh-1) + a, j - (kw-1) + b]
    # Each row's dot product is summed in the images' dtype, so that it
    # vectorises; the rows are then summed in float64.
    P, H, W = grad.shape
    zero = grad.dtype.type(0)
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
                    d = kw - 1 - b
                    g = grad[p, i, d:]
                    src = x[p, r, : W - d]
                    s = zero
                    for t in range(W - d):
                        s += g[t] * src[t]
                    out[task, a, b] += s


def _split(planes: int, width: int, height: int) -> tuple[int, int]:
    """Choose column strips and a row block so that every thread has work."""
    threads = numba.get_num_threads()
    if threads == 1 or planes % threads == 0 or planes >= 4 * threads:
        return 1, max(height, 1)
    strips = max(2, math.ceil(threads / planes))
    strips = max(1, min(strips, width // _MIN_STRIP))
    if strips == 1:
        return 1, max(height, 1)
    return strips, _ROW_BLOCK


def _divide_by_anchor(kernel: np.ndarray, anchors: np.ndarray):
    """Return ``kernel / anchor`` per equation and ``1 / anchor``, both contiguous."""
    scale = (1.0 / anchors).astype(kernel.dtype)
    shape = (-1,) + (1,) * (kernel.ndim - 1)
    return np.ascontiguousarray(kernel * scale.reshape(shape)), scale


def solve_depthwise(
    y: np.ndarray, kernel: np.ndarray, transpose: bool = False
) -> np.ndarray:
    """Solve ``causal_conv(x, kernel) = y`` (or its transpose) plane by plane.

    Parameters
    ----------
    y : (P, H, W) ndarray
        C-contiguous, float32 or float64.
    kernel : (Ck, kh, kw) ndarray
        Canonical (anchor bottom-right), same dtype; plane ``p`` uses
        ``kernel[p % Ck]``.
    transpose : bool
        Solve ``K^T x = y`` instead (the adjoint, an anti-causal solve).

    Returns
    -------
    x : (P, H, W) ndarray
    """
    x = np.empty_like(y)
    P, H, W = y.shape
    if y.size:
        kn, scale = _divide_by_anchor(kernel, kernel[:, -1, -1])
        strips, row_block = _split(P, W, H)
        _solve_depthwise(y, kn, scale, x, strips, row_block, transpose)
    return x


def solve_mixing(
    y: np.ndarray, kernel: np.ndarray, transpose: bool = False
) -> np.ndarray:
    """Solve the channel-mixing system (or its transpose) image by image.

    Parameters
    ----------
    y : (B, C, H, W) ndarray
        C-contiguous, float32 or float64.
    kernel : (C, C, kh, kw) ndarray
        Canonical, (out, in); the anchor block ``kernel[:, :, -1, -1]`` is
        lower triangular with a non-zero diagonal.
    transpose : bool
        Solve ``K^T x = y`` instead (the adjoint, an anti-causal solve).

    Returns
    -------
    x : (B, C, H, W) ndarray
    """
    x = np.empty_like(y)
    B, C, H, W = y.shape
    if y.size:
        if transpose:
            # equations in the fully flipped frame: K'[d, e] = K[C-1-e, C-1-d]
            kernel = kernel[::-1, ::-1].transpose(1, 0, 2, 3)
        kn, scale = _divide_by_anchor(kernel, np.diagonal(kernel[:, :, -1, -1]))
        strips, row_block = _split(B, W, H)
        _solve_mixing(y, kn, scale, x, strips, row_block, transpose)
    return x


def kernel_grad_depthwise(
    grad: np.ndarray, x: np.ndarray, Ck: int, kh: int, kw: int
) -> np.ndarray:
    """Correlate ``grad`` with the top-left padded ``x``, summed per kernel.

    Returns ``(Ck, kh, kw)``: ``sum_{p % Ck == c} sum_ij grad[p, i, j] *
    x_pad[p, i + a, j + b]``.  No scratch tensor of size image x kernel.
    """
    P, H, W = grad.shape
    threads = numba.get_num_threads()
    chunks = 1
    if P < 2 * threads:
        chunks = max(1, min(H, math.ceil(2 * threads / max(P, 1))))
    out = np.zeros((P * chunks, kh, kw), dtype=np.float64)
    if grad.size:
        _kernel_grad_depthwise(grad, x, kh, kw, chunks, out)
    per_plane = out.reshape(P, chunks, kh, kw).sum(axis=1)
    return per_plane.reshape(P // Ck, Ck, kh, kw).sum(axis=0).astype(grad.dtype)
