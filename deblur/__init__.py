"""deblur: the exact inverse of a causal convolution, and learning its kernel.

Based on Nagar & Varma, "Parallel Backpropagation for Inverse of a Convolution
with Application to Normalizing Flows" (AISTATS 2025, arXiv 2410.14634).
"""

from .ops import (
    ANCHORS,
    causal_conv2d,
    inverse_causal_conv2d,
    log_abs_det,
)

from .layer import InverseCausalConv2d

__version__ = "0.1.0"

__all__ = [
    "ANCHORS",
    "InverseCausalConv2d",
    "causal_conv2d",
    "inverse_causal_conv2d",
    "log_abs_det",
]
