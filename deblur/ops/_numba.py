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
What makes it fast (single-core cycles per pixel and the two-core times are
in ``deblur bench``):

* The kernel is divided by its anchor once, so the recurrence carries one
  fused multiply-add per pixel on its critical path and no division.
* For ``kw <= 7`` the recurrence keeps the row's last ``kw - 1`` values in
  registers (unused taps are zero, which leaves a finite sum unchanged): a
  value read back from memory right after it was stored waits for
  store-to-load forwarding on every pixel.
* Blocks (planes, or column strips of one wavefront step) are solved two at
  a time with their recurrences interleaved, since one recurrence is a chain
  of dependent multiply-adds that leaves the FMA units idle; for ``kw <= 5``
  a pair of rows costs about 1.3 rows.
* Passes over earlier rows, and the kernel gradient's dot products, take up
  to four taps at a time and work on slices indexed from zero, which numba
  vectorises (a possibly negative index gets a wrap-around check that stops
  LLVM from vectorising).
* ``fastmath`` is limited to ``contract`` (fusing ``a - w * x`` into one
  rounding) in the solves; only the kernel gradient's dot products, whose
  order is arbitrary anyway, may be reassociated.  Each row's dot product is
  summed in the images' dtype, the rows in float64.
* Small problems run on one thread: waking the others costs more.
"""

from __future__ import annotations

import contextlib
import functools
import math

import numba
import numpy as np
from numba import njit, prange

__all__ = ["kernel_grad_depthwise", "solve_depthwise", "solve_mixing"]

# FMA contraction only: no reassociation in the recurrences.
_SOLVE = {"contract"}
# The kernel gradient's dot products may be summed in any order.
_REDUCE = {"reassoc", "contract", "nsz"}
# Column strips narrower than this do not pay for the extra wavefront steps.
_MIN_STRIP = 64
# The cost model of _split, in pixels' worth of work (measured on two cores):
# per block row (loop set-up, a partial row of memory), per wavefront step.
_ROW_COST = 128
_STEP_COST = 4000
# Below this many multiply-adds one thread is faster than waking the others.
_SERIAL_WORK = 1 << 18
# Unsigned indices: numba checks a signed index for wrap-around
_U = numba.uint64


@njit(cache=True, nogil=True, boundscheck=False, fastmath=_SOLVE)
def _subtract_row(acc, plane, rr, weights, a, c0, c1, transpose):
    # acc[t] -= sum_b weights[a, b] * x[r, j - (kw-1) + b] for the frame
    # columns j in [c0, c1) of one earlier row r (stored row rr of plane);
    # acc[t] holds frame column c0 + t, or c1 - 1 - t when transposing (then
    # rows are stored right to left).  Indices in the vectorised loops are
    # unsigned: a signed one gets a wrap-around check that LLVM cannot
    # vectorise.
    W = plane.shape[1]
    kw = weights.shape[1]
    e = min(max(c0, kw - 1), c1)

    # the first kw - 1 columns of the image see only part of the kernel
    for j in range(c0, e):
        t = c1 - 1 - j if transpose else j - c0
        s = acc[t]
        for b in range(kw - 1 - j, kw):
            q = W - 1 - j + (kw - 1 - b) if transpose else j - (kw - 1 - b)
            s -= weights[a, b] * plane[rr, q]
        acc[t] = s

    # the rest, up to four taps per pass over acc
    nb = c1 - e
    if nb <= 0:
        return
    n = _U(nb)
    d0 = _U(0 if transpose else e - c0)
    base = W - c1 + kw - 1 if transpose else e - (kw - 1)
    sign = -1 if transpose else 1
    b = 0
    while b < kw:
        o0 = _U(base + sign * b)
        if kw - b >= 4:
            w0, w1, w2, w3 = (
                weights[a, b],
                weights[a, b + 1],
                weights[a, b + 2],
                weights[a, b + 3],
            )
            o1 = _U(base + sign * (b + 1))
            o2 = _U(base + sign * (b + 2))
            o3 = _U(base + sign * (b + 3))
            for t in range(n):
                acc[d0 + t] = (
                    acc[d0 + t]
                    - w0 * plane[rr, o0 + t]
                    - w1 * plane[rr, o1 + t]
                    - w2 * plane[rr, o2 + t]
                    - w3 * plane[rr, o3 + t]
                )
            b += 4
        elif kw - b >= 2:
            w0, w1 = weights[a, b], weights[a, b + 1]
            o1 = _U(base + sign * (b + 1))
            for t in range(n):
                acc[d0 + t] = (
                    acc[d0 + t] - w0 * plane[rr, o0 + t] - w1 * plane[rr, o1 + t]
                )
            b += 2
        else:
            w0 = weights[a, b]
            for t in range(n):
                acc[d0 + t] -= w0 * plane[rr, o0 + t]
            b += 1


@njit(cache=True, nogil=True, boundscheck=False, fastmath=_SOLVE)
def _prepare_row(
    y_plane, weights, inv, x_plane, i, c0, c1, acc, taps, where, transpose
):
    # acc <- (y - the taps on the previous kh - 1 rows) / anchor for frame row
    # i, frame columns [c0, c1); acc[t] holds frame column c0 + t, or
    # c1 - 1 - t when transposing (then rows are stored right to left).
    # weights is one kernel already divided by its anchor, inv = 1 / anchor;
    # taps (weights) and where (stored row, column shift) are scratch for
    # the (kh - 1) * kw taps on earlier rows.
    H = y_plane.shape[0]
    W = y_plane.shape[1]
    kh = weights.shape[0]
    kw = weights.shape[1]
    ri = H - 1 - i if transpose else i

    # the taps that fall inside the image: weight, stored row, column shift d
    nt = 0
    for a in range(kh - 1):
        r = i - (kh - 1) + a
        if r >= 0:
            for b in range(kw):
                taps[nt] = weights[a, b]
                where[nt, 0] = H - 1 - r if transpose else r
                where[nt, 1] = kw - 1 - b
                nt += 1

    # the first kw - 1 columns of the image see only part of the kernel
    e = min(max(c0, kw - 1), c1)
    for j in range(c0, e):
        q = W - 1 - j if transpose else j
        s = y_plane[ri, q] * inv
        for k in range(nt):
            d = where[k, 1]
            if j >= d:
                s -= taps[k] * x_plane[where[k, 0], q + d if transpose else q - d]
        acc[c1 - 1 - j if transpose else j - c0] = s

    # the rest, vectorised: up to four taps per pass over acc; the indices
    # are unsigned, since a signed one gets a wrap-around check that keeps
    # LLVM from vectorising
    nb = c1 - e
    if nb <= 0:
        return
    n = _U(nb)
    d0 = _U(0 if transpose else e - c0)
    yq = _U(W - c1 if transpose else e)
    for t in range(n):
        acc[d0 + t] = y_plane[ri, yq + t] * inv
    k = 0
    while k < nt:
        # tap k reads stored column yq + t + d (transposed) or yq + t - d
        g = min(4, nt - k)
        w0 = taps[k]
        r0 = where[k, 0]
        o0 = _U(yq + where[k, 1] if transpose else yq - where[k, 1])
        if g == 1:
            for t in range(n):
                acc[d0 + t] -= w0 * x_plane[r0, o0 + t]
            k += 1
            continue
        w1 = taps[k + 1]
        r1 = where[k + 1, 0]
        o1 = _U(yq + where[k + 1, 1] if transpose else yq - where[k + 1, 1])
        if g == 2:
            for t in range(n):
                acc[d0 + t] = (
                    acc[d0 + t] - w0 * x_plane[r0, o0 + t] - w1 * x_plane[r1, o1 + t]
                )
            k += 2
            continue
        w2 = taps[k + 2]
        r2 = where[k + 2, 0]
        o2 = _U(yq + where[k + 2, 1] if transpose else yq - where[k + 2, 1])
        if g == 3:
            for t in range(n):
                acc[d0 + t] = (
                    acc[d0 + t]
                    - w0 * x_plane[r0, o0 + t]
                    - w1 * x_plane[r1, o1 + t]
                    - w2 * x_plane[r2, o2 + t]
                )
            k += 3
            continue
        w3 = taps[k + 3]
        r3 = where[k + 3, 0]
        o3 = _U(yq + where[k + 3, 1] if transpose else yq - where[k + 3, 1])
        for t in range(n):
            acc[d0 + t] = (
                acc[d0 + t]
                - w0 * x_plane[r0, o0 + t]
                - w1 * x_plane[r1, o1 + t]
                - w2 * x_plane[r2, o2 + t]
                - w3 * x_plane[r3, o3 + t]
            )
        k += 4


@njit(cache=True, nogil=True, boundscheck=False, fastmath=_SOLVE)
def _recur(x_plane, ri, acc, h, c0, c1, j0, transpose):
    # Finish frame columns [j0, c1) of stored row ri (acc holds [c0, c1)):
    #   x[j] = acc[j] - sum_d h[d - 1] * x[j - d],  d = 1 .. len(h),
    # far taps first.  For len(h) <= 6 the last values stay in registers
    # (unused taps are zero); a value read back right after it was stored
    # would wait for store-to-load forwarding on every pixel.
    W = x_plane.shape[1]
    m = h.shape[0]
    n = c1 - j0
    if n <= 0:
        return
    zero = acc.dtype.type(0)
    step = -1 if transpose else 1
    q = W - 1 - j0 if transpose else j0  # stored column of frame column j0
    k = c1 - 1 - j0 if transpose else j0 - c0  # its place in acc
    if m > 6:
        for t in range(n):
            v = acc[_U(k + step * t)]
            for d in range(min(m, j0 + t), 0, -1):
                v -= h[d - 1] * x_plane[ri, _U(q + step * (t - d))]
            x_plane[ri, _U(q + step * t)] = v
        return

    h1 = h[0] if m >= 1 else zero
    h2 = h[1] if m >= 2 else zero
    h3 = h[2] if m >= 3 else zero
    h4 = h[3] if m >= 4 else zero
    h5 = h[4] if m >= 5 else zero
    h6 = h[5] if m >= 6 else zero
    p1 = x_plane[ri, q - step] if j0 >= 1 and m >= 1 else zero
    p2 = x_plane[ri, q - 2 * step] if j0 >= 2 and m >= 2 else zero
    p3 = x_plane[ri, q - 3 * step] if j0 >= 3 and m >= 3 else zero
    p4 = x_plane[ri, q - 4 * step] if j0 >= 4 and m >= 4 else zero
    p5 = x_plane[ri, q - 5 * step] if j0 >= 5 and m >= 5 else zero
    p6 = x_plane[ri, q - 6 * step] if j0 >= 6 and m >= 6 else zero
    for t in range(n):
        v = acc[_U(k + step * t)] - h6 * p6
        v = v - h5 * p5
        v = v - h4 * p4
        v = v - h3 * p3
        v = v - h2 * p2
        v = v - h1 * p1
        x_plane[ri, _U(q + step * t)] = v
        p6 = p5
        p5 = p4
        p4 = p3
        p3 = p2
        p2 = p1
        p1 = v


@njit(cache=True, nogil=True, boundscheck=False, fastmath=_SOLVE)
def _recur_pair(
    xa, ra, acc_a, h_a, c0_a, c1_a, xb, rb, acc_b, h_b, c0_b, c1_b, transpose
):
    # _recur on two independent rows at once: one recurrence is a chain of
    # dependent multiply-adds, two interleaved ones keep the FMA units busy.
    # Only up to two taps per row: with more, the pair is no faster than the
    # two rows one after the other (measured), and they run so.
    m = h_a.shape[0]
    n = min(c1_a - c0_a, c1_b - c0_b)
    if m > 2 or n <= 0:
        _recur(xa, ra, acc_a, h_a, c0_a, c1_a, c0_a, transpose)
        _recur(xb, rb, acc_b, h_b, c0_b, c1_b, c0_b, transpose)
        return
    W = xa.shape[1]
    zero = acc_a.dtype.type(0)
    step = -1 if transpose else 1
    qa = W - 1 - c0_a if transpose else c0_a
    qb = W - 1 - c0_b if transpose else c0_b
    ka = c1_a - 1 - c0_a if transpose else 0
    kb = c1_b - 1 - c0_b if transpose else 0
    a1 = h_a[0] if m >= 1 else zero
    a2 = h_a[1] if m >= 2 else zero
    b1 = h_b[0] if m >= 1 else zero
    b2 = h_b[1] if m >= 2 else zero
    u1 = xa[ra, qa - step] if c0_a >= 1 and m >= 1 else zero
    u2 = xa[ra, qa - 2 * step] if c0_a >= 2 and m >= 2 else zero
    v1 = xb[rb, qb - step] if c0_b >= 1 and m >= 1 else zero
    v2 = xb[rb, qb - 2 * step] if c0_b >= 2 and m >= 2 else zero
    for t in range(n):
        u = acc_a[_U(ka + step * t)] - a2 * u2
        v = acc_b[_U(kb + step * t)] - b2 * v2
        u = u - a1 * u1
        v = v - b1 * v1
        xa[ra, _U(qa + step * t)] = u
        xb[rb, _U(qb + step * t)] = v
        u2 = u1
        u1 = u
        v2 = v1
        v1 = v

    # the longer row's remaining columns
    _recur(xa, ra, acc_a, h_a, c0_a, c1_a, c0_a + n, transpose)
    _recur(xb, rb, acc_b, h_b, c0_b, c1_b, c0_b + n, transpose)


@njit(cache=True, nogil=True, boundscheck=False)
def _solve_blocks(y, kernel, tail, scale, x, a, b, transpose):
    # Solve block a = (plane, r0, r1, c0, c1) in the solve's frame, and block
    # b alongside it, row by row (b[0] < 0: block a alone).  tail[kc] holds
    # the anchor row's taps, nearest first.
    H = y.shape[1]
    Ck = kernel.shape[0]
    pa, ra0, ra1, ca0, ca1 = a
    pb, rb0, rb1, cb0, cb1 = b
    alone = pb < 0
    if alone:
        pb, rb0, rb1, cb0, cb1 = pa, 0, 0, 0, 0
    ya, xa, ka, ha, inv_a = y[pa], x[pa], kernel[pa % Ck], tail[pa % Ck], scale[pa % Ck]
    yb, xb, kb, hb, inv_b = y[pb], x[pb], kernel[pb % Ck], tail[pb % Ck], scale[pb % Ck]
    acc_a = np.empty(ca1 - ca0, dtype=y.dtype)
    acc_b = np.empty(cb1 - cb0, dtype=y.dtype)
    taps = np.empty((kernel.shape[1] - 1) * kernel.shape[2], dtype=y.dtype)
    where = np.empty((taps.shape[0], 2), dtype=np.int64)
    for t in range(max(ra1 - ra0, rb1 - rb0)):
        ia = ra0 + t
        ib = rb0 + t
        has_a = ia < ra1
        has_b = ib < rb1
        sa = H - 1 - ia if transpose else ia
        sb = H - 1 - ib if transpose else ib
        if has_a:
            _prepare_row(ya, ka, inv_a, xa, ia, ca0, ca1, acc_a, taps, where, transpose)
        if has_b:
            _prepare_row(yb, kb, inv_b, xb, ib, cb0, cb1, acc_b, taps, where, transpose)
        if has_a and has_b:
            _recur_pair(
                xa, sa, acc_a, ha, ca0, ca1, xb, sb, acc_b, hb, cb0, cb1, transpose
            )
        elif has_a:
            _recur(xa, sa, acc_a, ha, ca0, ca1, ca0, transpose)
        elif has_b:
            _recur(xb, sb, acc_b, hb, cb0, cb1, cb0, transpose)


@njit(parallel=True, cache=True, boundscheck=False)
def _solve_depthwise(y, kernel, tail, scale, x, strips, row_block, group, transpose):
    P, H, W = y.shape
    rows = (H + row_block - 1) // row_block
    width = (W + strips - 1) // strips
    # block (r, s) needs (r - 1, s), (r, s - 1) and (r - 1, s - 1), so the
    # blocks with r + s == wave are independent: solve them `group` (1 or 2)
    # at a time
    for wave in range(rows + strips - 1):
        s_lo = max(0, wave - rows + 1)
        span = min(strips, wave + 1) - s_lo
        count = P * span
        for task in prange((count + group - 1) // group):
            blocks = [(-1, 0, 0, 0, 0), (-1, 0, 0, 0, 0)]
            for half in range(group):
                index = group * task + half
                if index < count:
                    p = index // span
                    s = s_lo + index % span
                    r = wave - s
                    blocks[half] = (
                        p,
                        r * row_block,
                        min(H, (r + 1) * row_block),
                        s * width,
                        min(W, (s + 1) * width),
                    )
            _solve_blocks(y, kernel, tail, scale, x, blocks[0], blocks[1], transpose)


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
                x_plane = x[n, cj]
                weights = kernel[c, ci]
                for a in range(kh - 1):
                    r = i - (kh - 1) + a
                    if r >= 0:
                        rr = H - 1 - r if transpose else r
                        _subtract_row(
                            acc[c], x_plane, rr, weights, a, c0, c1, transpose
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
                        v -= (
                            kernel[c, ci, kh - 1, kw - 1 - d]
                            * x[n, cj, ri, jq - step * d]
                        )
                for ci in range(c):
                    cj = C - 1 - ci if transpose else ci
                    v -= kernel[c, ci, kh - 1, kw - 1] * x[n, cj, ri, jq]
                cq = C - 1 - c if transpose else c
                x[n, cq, ri, jq] = v


@njit(parallel=True, cache=True, boundscheck=False)
def _solve_mixing(y, kernel, scale, x, strips, row_block, transpose):
    B, _, H, W = y.shape
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


@njit(cache=True, nogil=True, boundscheck=False, fastmath=_REDUCE)
def _kernel_grad_rows(grad, x, p, r0, r1, out):
    # out[a, b] += sum over rows [r0, r1) of plane p of
    #   grad[p, i, j] * x[p, i - (kh-1) + a, j - (kw-1) + b]
    # Each row's dot products are summed in the images' dtype, four taps per
    # pass over the row so that they share the loads of grad, and vectorised;
    # the rows are then summed in float64.
    W = grad.shape[2]
    kh = out.shape[0]
    kw = out.shape[1]
    zero = grad.dtype.type(0)
    for i in range(r0, r1):
        for a in range(kh):
            r = i - (kh - 1) + a
            if r < 0:
                continue
            src = x[p, r]
            b = 0
            while b < kw:
                # tap b reads x[j - d] with d = kw - 1 - b, for j >= d
                d = kw - 1 - b
                if kw - b >= 4:
                    # columns j >= d: all four taps (d, d-1, d-2, d-3) valid
                    g = grad[p, i, d:]
                    s0 = src[: W - d]
                    s1 = src[1 : W - d + 1]
                    s2 = src[2 : W - d + 2]
                    s3 = src[3 : W - d + 3]
                    t0 = t1 = t2 = t3 = zero
                    for t in range(W - d):
                        gt = g[t]
                        t0 += gt * s0[t]
                        t1 += gt * s1[t]
                        t2 += gt * s2[t]
                        t3 += gt * s3[t]
                    # taps b+1.. also see the columns d-3 .. d-1
                    for j in range(max(d - 3, 0), min(d, W)):
                        gj = grad[p, i, j]
                        if j >= d - 1:
                            t1 += gj * src[j - d + 1]
                        if j >= d - 2:
                            t2 += gj * src[j - d + 2]
                        t3 += gj * src[j - d + 3]
                    out[a, b] += t0
                    out[a, b + 1] += t1
                    out[a, b + 2] += t2
                    out[a, b + 3] += t3
                    b += 4
                elif kw - b >= 2:
                    g = grad[p, i, d:]
                    s0 = src[: W - d]
                    s1 = src[1 : W - d + 1]
                    t0 = t1 = zero
                    for t in range(W - d):
                        gt = g[t]
                        t0 += gt * s0[t]
                        t1 += gt * s1[t]
                    if 1 <= d <= W:
                        t1 += grad[p, i, d - 1] * src[0]
                    out[a, b] += t0
                    out[a, b + 1] += t1
                    b += 2
                else:
                    g = grad[p, i, d:]
                    s0 = src[: W - d]
                    t0 = zero
                    for t in range(W - d):
                        t0 += g[t] * s0[t]
                    out[a, b] += t0
                    b += 1


@njit(parallel=True, cache=True, boundscheck=False)
def _kernel_grad_depthwise(grad, x, chunks, out):
    P, H, _ = grad.shape
    rows = (H + chunks - 1) // chunks
    for task in prange(P * chunks):
        p = task // chunks
        r0 = (task % chunks) * rows
        _kernel_grad_rows(grad, x, p, r0, min(H, r0 + rows), out[task])


def _split(
    planes: int, width: int, height: int, pair_cost: float = 2.0
) -> tuple[int, int, int]:
    """Split ``planes`` of ``height x width`` for the current numba threads."""
    return _split_for(planes, width, height, pair_cost, numba.get_num_threads())


@functools.lru_cache(maxsize=256)
def _split_for(
    planes: int, width: int, height: int, pair_cost: float, threads: int
) -> tuple[int, int, int]:
    """Choose column strips, a row block and the blocks per task.

    Returns ``(strips, row_block, group)``.  Each candidate is scored with a
    small cost model, in pixel-equivalents: a block row costs its width (times
    ``pair_cost / 2`` per block when two run as a pair), plus a fixed
    ``_ROW_COST`` per row and block; a wavefront step costs ``_STEP_COST`` plus
    the busiest thread's tasks (numba hands each thread an equal run of
    them).  One strip means whole planes and a single step.
    """
    groups = (1, 2) if pair_cost < 2.0 else (1,)
    best, best_cost = (1, max(height, 1), 1), math.inf
    for strips in range(1, max(1, min(8, width // _MIN_STRIP)) + 1):
        width_s = math.ceil(width / strips)
        for row_block in (height,) if strips == 1 else (32, 64, 128):
            rows = math.ceil(height / row_block)
            for group in groups:
                per_row = width_s + _ROW_COST
                if group == 2:
                    per_row = width_s * pair_cost + 2 * _ROW_COST
                task = min(row_block, height) * per_row
                cost = 0.0
                for wave in range(rows + strips - 1):
                    span = min(strips, wave + 1) - max(0, wave - rows + 1)
                    tasks = math.ceil(planes * span / group)
                    cost += math.ceil(tasks / threads) * task + _STEP_COST
                if cost < best_cost:
                    best, best_cost = (strips, row_block, group), cost
    return best


@contextlib.contextmanager
def _threads_for(work: int):
    """Run a small problem (``work`` multiply-adds) on the calling thread only."""
    if work >= _SERIAL_WORK:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


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
        # the anchor row's taps, nearest to the anchor first
        tail = np.ascontiguousarray(kn[:, -1, -2::-1])
        # interleaved pairs of rows (up to two taps each) cost 1.24 rows
        pair_cost = 1.24 if kernel.shape[2] <= 3 else 2.0
        with _threads_for(y.size * kernel[0].size):
            strips, row_block, group = _split(P, W, H, pair_cost)
            _solve_depthwise(y, kn, tail, scale, x, strips, row_block, group, transpose)
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
    B, _, H, W = y.shape
    if y.size:
        if transpose:
            # equations in the fully flipped frame: K'[d, e] = K[C-1-e, C-1-d]
            kernel = kernel[::-1, ::-1].transpose(1, 0, 2, 3)
        kn, scale = _divide_by_anchor(kernel, np.diagonal(kernel[:, :, -1, -1]))
        with _threads_for(y.size * kernel[0].size):
            strips, row_block, _ = _split(B, W, H)
            _solve_mixing(y, kn, scale, x, strips, row_block, transpose)
    return x


def kernel_grad_depthwise(
    grad: np.ndarray, x: np.ndarray, Ck: int, kh: int, kw: int
) -> np.ndarray:
    """Correlate ``grad`` with the top-left padded ``x``, summed per kernel.

    Returns ``(Ck, kh, kw)``: ``sum_{p % Ck == c} sum_ij grad[p, i, j] *
    x_pad[p, i + a, j + b]``.  No scratch tensor of size image x kernel.
    """
    P, H, _ = grad.shape
    with _threads_for(grad.size * kh * kw):
        threads = numba.get_num_threads()
        chunks = 1
        if P < 2 * threads:
            chunks = max(1, min(H, math.ceil(2 * threads / max(P, 1))))
        out = np.zeros((P * chunks, kh, kw), dtype=np.float64)
        if grad.size:
            _kernel_grad_depthwise(grad, x, chunks, out)
    per_plane = out.reshape(P, chunks, kh, kw).sum(axis=1)
    return per_plane.reshape(P // Ck, Ck, kh, kw).sum(axis=0).astype(grad.dtype)
