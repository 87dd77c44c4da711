"""Kernel forms and anchor corners, reduced to one canonical form.

The solvers only know one case: the anchor in the bottom-right corner of the
kernel array.  An anchor in another corner is the same operator on a flipped
image and kernel, and a ``(kh, kw)`` kernel is a ``(1, kh, kw)`` one.
"""

from __future__ import annotations

import enum

import torch

__all__ = [
    "ANCHORS",
    "KernelForm",
    "check_anchor",
    "classify_kernel",
    "flip_dims",
    "to_canonical",
]

ANCHORS = ("bottom-right", "bottom-left", "top-right", "top-left")

_FLIPS = {
    "bottom-right": (),
    "bottom-left": (-1,),
    "top-right": (-2,),
    "top-left": (-2, -1),
}


class KernelForm(str, enum.Enum):
    """How a kernel acts on the channels of an image."""

    SHARED = "shared"  # (kh, kw): one kernel for every channel
    PER_CHANNEL = "per-channel"  # (C, kh, kw)
    MIXING = "mixing"  # (C, C, kh, kw), (out, in)


def check_anchor(anchor: str) -> str:
    """Return ``anchor`` if it names a corner, else raise ``ValueError``."""
    if anchor not in _FLIPS:
        hint = ""
        if anchor in ("center", "centre"):
            hint = (
                "; a centred kernel is not causal and has no exact inverse, "
                "use the regularised methods (--method wiener) for it"
            )
        raise ValueError(
            f"anchor must be one of {', '.join(ANCHORS)}, got {anchor!r}{hint}"
        )
    return anchor


def flip_dims(anchor: str) -> tuple[int, ...]:
    """Spatial dims to flip so that ``anchor`` becomes the bottom-right corner."""
    return _FLIPS[check_anchor(anchor)]


def classify_kernel(kernel: torch.Tensor, channels: int | None = None) -> KernelForm:
    """Name the form of ``kernel`` and check it against ``channels``.

    Raises
    ------
    ValueError
        If the kernel has the wrong number of dimensions, an empty side, or a
        channel count that does not match ``channels``.
    """
    if kernel.dim() not in (2, 3, 4):
        raise ValueError(
            "kernel must be (kh, kw), (C, kh, kw) or (C, C, kh, kw), "
            f"got {kernel.dim()} dimensions of shape {tuple(kernel.shape)}"
        )
    if kernel.numel() == 0:
        raise ValueError(f"kernel is empty, got shape {tuple(kernel.shape)}")
    if kernel.dim() == 2:
        return KernelForm.SHARED
    if kernel.dim() == 4 and kernel.shape[0] != kernel.shape[1]:
        raise ValueError(
            "a channel-mixing kernel must be (C, C, kh, kw), "
            f"got shape {tuple(kernel.shape)}"
        )
    if channels is not None and kernel.shape[0] != channels:
        raise ValueError(
            f"kernel has {kernel.shape[0]} channels (shape "
            f"{tuple(kernel.shape)}) but the image has {channels}; "
            "give one kernel per channel or a single (kh, kw) kernel"
        )
    return KernelForm.PER_CHANNEL if kernel.dim() == 3 else KernelForm.MIXING


def to_canonical(kernel: torch.Tensor, anchor: str = "bottom-right") -> torch.Tensor:
    """Flip ``kernel`` so that its anchor is bottom-right; ``(kh, kw)`` -> ``(1, kh, kw)``."""
    dims = flip_dims(anchor)
    if kernel.dim() == 2:
        kernel = kernel.unsqueeze(0)
    if dims:
        kernel = kernel.flip(dims)
    return kernel.contiguous()
