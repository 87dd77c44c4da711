"""The one dispatch point from a tensor's device to a solver backend.

Each backend module offers, on the canonical form (anchor bottom-right)::

    solve_depthwise(y: (P, H, W), kernel: (Ck, kh, kw)) -> x  (plane p uses kernel[p % Ck])
    solve_mixing(y: (B, C, H, W), kernel: (C, C, kh, kw)) -> x

``numba`` serves CPU tensors, ``triton`` CUDA tensors, and the torch-ops
``wavefront`` any device (and is the reference for the others).
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

__all__ = ["solve_depthwise", "solve_mixing", "kernel_grad_depthwise", "backend_for"]


def _triton_usable(device: torch.device) -> bool:
    """Triton serves CUDA tensors, and CPU tensors only under its interpreter."""
    try:
        from . import _triton
    except ImportError as exc:
        log.warning("triton unavailable (%s); using the torch wavefront", exc)
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and _triton.INTERPRETED


def backend_for(device: torch.device) -> str:
    """Name the backend that solves on ``device``.

    ``DEBLUR_BACKEND`` (``numba``, ``triton``, ``wavefront``) overrides the
    choice, for tests and benchmarks.
    """
    forced = os.environ.get("DEBLUR_BACKEND")
    if forced in ("wavefront", "numba", "triton"):
        if forced == "numba" and device.type != "cpu":
            return "wavefront"
        if forced == "triton" and not _triton_usable(device):
            return "wavefront"
        return forced
    if device.type == "cpu":
        return "numba"
    if device.type == "cuda" and _triton_usable(device):
        return "triton"
    return "wavefront"


def _numpy(t: torch.Tensor):
    return t.detach().contiguous().numpy()


def solve_depthwise(y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    name = backend_for(y.device)
    log.debug("solve_depthwise %s on %s with %s", tuple(y.shape), y.device, name)
    if name == "numba":
        from . import _numba

        return torch.from_numpy(_numba.solve_depthwise(_numpy(y), _numpy(kernel)))
    if name == "triton":
        from . import _triton

        return _triton.solve_depthwise(y.contiguous(), kernel.contiguous())
    from . import wavefront

    return wavefront.solve_depthwise(y, kernel)


def solve_mixing(y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    name = backend_for(y.device)
    log.debug("solve_mixing %s on %s with %s", tuple(y.shape), y.device, name)
    if name == "numba":
        from . import _numba

        return torch.from_numpy(_numba.solve_mixing(_numpy(y), _numpy(kernel)))
    if name == "triton":
        from . import _triton

        return _triton.solve_mixing(y.contiguous(), kernel.contiguous())
    from . import wavefront

    return wavefront.solve_mixing(y, kernel)


def kernel_grad_depthwise(
    grad: torch.Tensor, x: torch.Tensor, Ck: int, kh: int, kw: int
) -> torch.Tensor:
    """``sum_{p % Ck == c} sum_ij grad[p, i, j] * x_pad[p, i + a, j + b]``, ``(Ck, kh, kw)``."""
    if x.device.type == "cpu":
        from . import _numba

        return torch.from_numpy(
            _numba.kernel_grad_depthwise(_numpy(grad), _numpy(x), Ck, kh, kw)
        )
    # A conv weight-gradient: the planes that share a kernel are its batch.
    P, H, W = grad.shape
    x_pad = torch.nn.functional.pad(x, (kw - 1, 0, kh - 1, 0))
    x_pad = x_pad.reshape(P // Ck, Ck, H + kh - 1, W + kw - 1)
    g = grad.reshape(P // Ck, Ck, H, W)
    out = torch.nn.grad.conv2d_weight(x_pad, (Ck, 1, kh, kw), g, groups=Ck)
    return out.reshape(Ck, kh, kw)
