"""A normalizing-flow layer whose forward pass is an inverse causal convolution.

The paper's second use of the operator (Nagar & Varma 2025, section 5): a
flow step ``x = K^-1 y`` with a learnable causal kernel ``K``, its exact
inverse ``y = K x`` (a plain causal convolution) and a log-determinant that
costs nothing, because the operator is triangular.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .ops import causal_conv2d, inverse_causal_conv2d, log_abs_det
from .ops.forms import check_anchor, flip_dims

__all__ = ["InverseCausalConv2d"]


def _parse_size(kernel_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(kernel_size, int):
        kernel_size = (kernel_size, kernel_size)
    kh, kw = (int(s) for s in kernel_size)
    if kh < 1 or kw < 1:
        raise ValueError(
            f"kernel_size must be positive, got {tuple(kernel_size)}; "
            "use (1, 1) for a per-pixel layer"
        )
    return kh, kw


class InverseCausalConv2d(nn.Module):
    """Flow layer ``x = K^-1 y``: an exact inverse causal convolution.

    Parameters
    ----------
    channels : int
        Channels ``C`` of the images the layer acts on.
    kernel_size : int or (int, int), default (3, 3)
        ``(kh, kw)``.
    mixing : bool, default True
        Learn a channel-mixing kernel ``(C, C, kh, kw)`` whose anchor block is
        lower triangular (the normalizing-flow form); otherwise one kernel per
        channel, ``(C, kh, kw)``.
    anchor : {"bottom-right", "bottom-left", "top-right", "top-left"}
        Corner of the kernel array that holds the anchor tap.
    init_std : float, default 0.01
        Standard deviation of the initial taps off the anchor (the anchor
        starts at 1, so the layer starts near the identity).

    Attributes
    ----------
    weight : (C, C, kh, kw) or (C, kh, kw) Parameter
        The taps.  Its entries at the anchor's diagonal, and above the
        diagonal of a mixing kernel's anchor block, are not used.
    log_anchor : (C,) Parameter
        ``log`` of the anchor taps (the anchor block's diagonal).

    Notes
    -----
    The anchor taps are ``exp(log_anchor)``: positive, so the kernel is
    invertible for every value of the parameters, and the log-determinant is
    linear in them.  The price is that a negative anchor cannot be learned;
    follow the layer by a sign flip if one is needed.  The upper triangle of
    the anchor block is masked to zero (causal in the channels too).  The
    inverse is exact but it amplifies errors by the kernel's noise gain;
    taps much larger than the anchor make it unstable (DESIGN.md section 3).

    Examples
    --------
    >>> layer = InverseCausalConv2d(3, kernel_size=(2, 2))
    >>> y = torch.rand(4, 3, 8, 8)
    >>> x, logdet = layer(y)
    >>> x.shape, logdet.shape
    (torch.Size([4, 3, 8, 8]), torch.Size([4]))
    >>> torch.allclose(layer.reverse(x), y, atol=1e-5)
    True
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int] = (3, 3),
        mixing: bool = True,
        anchor: str = "bottom-right",
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        self.channels = int(channels)
        self.kernel_size = _parse_size(kernel_size)
        self.mixing = bool(mixing)
        self.anchor = check_anchor(anchor)

        kh, kw = self.kernel_size
        C = self.channels
        shape = (C, C, kh, kw) if self.mixing else (C, kh, kw)
        self.weight = nn.Parameter(torch.randn(shape) * init_std)
        self.log_anchor = nn.Parameter(torch.zeros(C))

        # 1 where weight is used, 0 at the anchor diagonal (and above it)
        mask = torch.ones(shape)
        ai, aj = self._anchor_index()
        if self.mixing:
            mask[:, :, ai, aj] = torch.ones(C, C).tril(-1)
        else:
            mask[:, ai, aj] = 0.0
        self.register_buffer("mask", mask, persistent=False)
        corner = torch.zeros(kh, kw)
        corner[ai, aj] = 1.0
        self.register_buffer("corner", corner, persistent=False)

    def _anchor_index(self) -> tuple[int, int]:
        kh, kw = self.kernel_size
        dims = flip_dims(self.anchor)
        return (0 if -2 in dims else kh - 1), (0 if -1 in dims else kw - 1)

    @property
    def kernel(self) -> Tensor:
        """The kernel ``K``: ``(C, C, kh, kw)`` or ``(C, kh, kw)``, differentiable."""
        anchors = self.log_anchor.exp()
        if self.mixing:
            anchors = torch.diag_embed(anchors)
        return self.weight * self.mask + anchors[..., None, None] * self.corner

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``y`` to ``x = K^-1 y`` and return ``log|det|`` of that map.

        Parameters
        ----------
        y : (B, C, H, W) Tensor

        Returns
        -------
        x : (B, C, H, W) Tensor
        logdet : (B,) Tensor
            ``log|det(K^-1)| = -log|det K|``, the same for every image.
        """
        kernel = self.kernel
        B, _, H, W = y.shape
        x = inverse_causal_conv2d(y, kernel.to(y.dtype), self.anchor)
        logdet = -log_abs_det(kernel, H, W, self.channels, self.anchor)
        return x, logdet.to(y.dtype).expand(B)

    def reverse(self, x: Tensor) -> Tensor:
        """Map ``x`` back to ``y = K x``, a causal convolution (the exact inverse).

        Parameters
        ----------
        x : (B, C, H, W) Tensor

        Returns
        -------
        y : (B, C, H, W) Tensor
        """
        return causal_conv2d(x, self.kernel.to(x.dtype), self.anchor)

    def extra_repr(self) -> str:
        kh, kw = self.kernel_size
        return (
            f"{self.channels}, kernel_size=({kh}, {kw}), mixing={self.mixing}, "
            f"anchor={self.anchor!r}"
        )
