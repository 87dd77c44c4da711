"""Triton solvers: the whole wavefront in one kernel launch.

Pixels on one anti-diagonal ``d = i + j`` of the canonical system (anchor
bottom-right) depend only on earlier anti-diagonals (Nagar & Varma 2025,
section 3).  The paper's code launches one kernel per diagonal, ``H + W - 1``
launches and synchronisations per call, and that dominates its run time.  Here
each program owns whole planes (depthwise) or whole images with all their
channels (mixing) and loops over the diagonals *inside* the kernel: it reads
the earlier diagonals back from the output buffer it is writing, with a
``tl.debug_barrier()`` between diagonals so that one diagonal's stores are
visible to every thread of the program before the next diagonal loads them
(DESIGN.md section 4).  A diagonal longer than ``BLOCK_SIZE`` is solved in
chunks: they depend only on earlier diagonals, so need no barrier between them.

One program per plane leaves most of a large GPU idle for a single RGB image;
it is still one launch, and a batch fills the GPU.

On CPU tensors the kernels run only under Triton's interpreter: set
``TRITON_INTERPRET=1`` before this module is first imported (it decides, when
the kernels are decorated, whether they compile or interpret).  That is how
the tests exercise the kernels without a GPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the triton backend needs the triton package, which is not installed; "
        "install it with `pip install 'deblur[gpu]'` or set "
        "DEBLUR_BACKEND=wavefront to use the torch-ops solver"
    ) from exc

__all__ = ["INTERPRETED", "solve_depthwise", "solve_mixing"]

_MAX_BLOCK_SIZE = 1024


@triton.jit
def _depthwise_kernel(
    y_ptr,
    kernel_ptr,
    x_ptr,
    H,
    W,
    Ck,
    kh: tl.constexpr,
    kw: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    # one program per plane; plane pid uses kernel[pid % Ck]
    pid = tl.program_id(0)
    base = pid.to(tl.int64) * H * W
    taps = kernel_ptr + (pid % Ck) * (kh * kw)
    anchor = tl.load(taps + kh * kw - 1)

    for d in range(H + W - 1):
        first = tl.maximum(d - W + 1, 0)
        last = tl.minimum(d, H - 1)
        for start in range(first, last + 1, BLOCK_SIZE):
            i = start + tl.arange(0, BLOCK_SIZE)
            j = d - i
            mask = i <= last
            offsets = base + i * W + j
            acc = tl.load(y_ptr + offsets, mask=mask, other=0.0)

            # taps on earlier diagonals: row a lies kh-1-a rows up, column b
            # kw-1-b columns left; pixels outside the image are zero
            for a in tl.static_range(kh):
                up = x_ptr + offsets - (kh - 1 - a) * W
                row_mask = mask & (i >= kh - 1 - a)
                for b in tl.static_range(kw):
                    if a != kh - 1 or b != kw - 1:
                        tap_mask = row_mask & (j >= kw - 1 - b)
                        w = tl.load(taps + a * kw + b)
                        v = tl.load(up - (kw - 1 - b), mask=tap_mask, other=0.0)
                        acc -= w * v

            tl.store(x_ptr + offsets, acc / anchor, mask=mask)
        # this diagonal's stores, visible before the next one loads them
        tl.debug_barrier()


@triton.jit
def _mixing_kernel(
    y_ptr,
    kernel_ptr,
    x_ptr,
    C,
    H,
    W,
    kh: tl.constexpr,
    kw: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    # one program per image, owning all C channels; kernel is (C, C, kh, kw)
    pid = tl.program_id(0)
    plane = H * W
    base = pid.to(tl.int64) * C * plane

    for d in range(H + W - 1):
        first = tl.maximum(d - W + 1, 0)
        last = tl.minimum(d, H - 1)
        for start in range(first, last + 1, BLOCK_SIZE):
            i = start + tl.arange(0, BLOCK_SIZE)
            j = d - i
            mask = i <= last
            offsets = base + i * W + j

            # channels in order: c reads channels c_in < c of the same pixel
            for c in range(C):
                acc = tl.load(y_ptr + offsets + c * plane, mask=mask, other=0.0)
                for c_in in range(C):
                    taps = kernel_ptr + (c * C + c_in) * (kh * kw)
                    source = x_ptr + offsets + c_in * plane
                    for a in tl.static_range(kh):
                        up = source - (kh - 1 - a) * W
                        row_mask = mask & (i >= kh - 1 - a)
                        for b in tl.static_range(kw):
                            tap_mask = row_mask & (j >= kw - 1 - b)
                            if a == kh - 1 and b == kw - 1:
                                # the anchor block, lower triangular
                                tap_mask = mask & (c_in < c)
                            w = tl.load(taps + a * kw + b)
                            v = tl.load(up - (kw - 1 - b), mask=tap_mask, other=0.0)
                            acc -= w * v
                anchor = tl.load(kernel_ptr + (c * C + c) * (kh * kw) + kh * kw - 1)
                tl.store(x_ptr + offsets + c * plane, acc / anchor, mask=mask)
                # channel c of this chunk, visible to the channels after it
                tl.debug_barrier()
        # this diagonal's stores, visible before the next one loads them
        tl.debug_barrier()


#: Whether the kernels above were decorated under ``TRITON_INTERPRET=1`` and so
#: run on CPU tensors (through numpy) instead of compiling for a GPU.
INTERPRETED = not isinstance(_depthwise_kernel, triton.runtime.jit.JITFunction)


def _block_size(height: int, width: int, block_size: int | None) -> int:
    """Power of two covering the longest diagonal, ``min(H, W)``, up to a cap."""
    if block_size is not None:
        if block_size < 1 or block_size & (block_size - 1):
            raise ValueError(f"block_size must be a power of two, got {block_size}")
        return block_size
    return min(_MAX_BLOCK_SIZE, max(16, triton.next_power_of_2(min(height, width))))


def _launch_options(block_size: int) -> dict:
    """Warps for one program, and fused multiply-adds asked for explicitly."""
    return {"num_warps": max(1, min(8, block_size // 128)), "enable_fp_fusion": True}


def _check(y: Tensor, kernel: Tensor, name: str) -> None:
    if y.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} solves float32 or float64, got {y.dtype}")
    if y.device.type == "cpu" and not INTERPRETED:
        raise RuntimeError(
            f"{name} got a CPU tensor, but Triton runs on the CPU only under its "
            "interpreter, which was off when deblur.ops._triton was imported; "
            "set TRITON_INTERPRET=1 before importing deblur, or use "
            "DEBLUR_BACKEND=numba (or wavefront) for CPU tensors"
        )


def solve_depthwise(
    y: Tensor, kernel: Tensor, *, block_size: int | None = None
) -> Tensor:
    """Solve ``causal_conv(x, kernel[p % Ck]) = y[p]`` in one kernel launch.

    Parameters
    ----------
    y : (P, H, W) Tensor
        The blurred planes, float32 or float64, on a CUDA device (or the CPU
        under ``TRITON_INTERPRET=1``).
    kernel : (Ck, kh, kw) Tensor
        Canonical kernels (anchor ``kernel[:, -1, -1]``, non-zero); plane
        ``p`` uses ``kernel[p % Ck]``.
    block_size : int, optional
        Pixels of a diagonal solved at once, a power of two; by default the
        longest diagonal, up to 1024.  Longer diagonals run in chunks.

    Returns
    -------
    x : (P, H, W) Tensor
        The solution, same dtype and device as ``y``.

    Raises
    ------
    TypeError
        If ``y`` is neither float32 nor float64.
    RuntimeError
        If ``y`` is on the CPU and Triton's interpreter is off.
    """
    _check(y, kernel, "solve_depthwise")
    y = y.contiguous()
    kernel = kernel.to(device=y.device, dtype=y.dtype).contiguous()
    P, H, W = y.shape
    Ck, kh, kw = kernel.shape
    x = torch.empty_like(y)
    if y.numel() == 0:
        return x

    BLOCK_SIZE = _block_size(H, W, block_size)
    _depthwise_kernel[(P,)](
        y, kernel, x, H, W, Ck, kh, kw, BLOCK_SIZE, **_launch_options(BLOCK_SIZE)
    )
    return x


def solve_mixing(y: Tensor, kernel: Tensor, *, block_size: int | None = None) -> Tensor:
    """Solve the channel-mixing system in one kernel launch.

    Parameters
    ----------
    y : (B, C, H, W) Tensor
        The blurred images, float32 or float64, on a CUDA device (or the CPU
        under ``TRITON_INTERPRET=1``).
    kernel : (C, C, kh, kw) Tensor
        Canonical mixing kernel (out, in); its anchor block
        ``kernel[:, :, -1, -1]`` is lower triangular with a non-zero diagonal.
    block_size : int, optional
        As for :func:`solve_depthwise`.

    Returns
    -------
    x : (B, C, H, W) Tensor
        The solution, same dtype and device as ``y``.

    Raises
    ------
    TypeError
        If ``y`` is neither float32 nor float64.
    RuntimeError
        If ``y`` is on the CPU and Triton's interpreter is off.

    Notes
    -----
    Entries of the anchor block above its diagonal are ignored, not checked:
    :func:`deblur.ops.solve.check_invertible` refuses such kernels earlier.
    """
    _check(y, kernel, "solve_mixing")
    y = y.contiguous()
    kernel = kernel.to(device=y.device, dtype=y.dtype).contiguous()
    B, C, H, W = y.shape
    kh, kw = kernel.shape[-2:]
    x = torch.empty_like(y)
    if y.numel() == 0:
        return x

    BLOCK_SIZE = _block_size(H, W, block_size)
    _mixing_kernel[(B,)](
        y, kernel, x, C, H, W, kh, kw, BLOCK_SIZE, **_launch_options(BLOCK_SIZE)
    )
    return x
