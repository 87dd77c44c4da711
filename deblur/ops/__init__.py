"""The operator: a causal convolution, its exact inverse and log-determinant."""

from .blur import causal_conv2d
from .forms import ANCHORS, KernelForm
from .logdet import log_abs_det
from .solve import causal_solve, inverse_causal_conv2d

__all__ = [
    "ANCHORS",
    "KernelForm",
    "causal_conv2d",
    "causal_solve",
    "inverse_causal_conv2d",
    "log_abs_det",
]
