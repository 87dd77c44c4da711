"""The exact inverse of a causal convolution, as a torch custom op.

``deblur::causal_solve`` solves the canonical system (anchor bottom-right) on
any device; its backward pass is the same solver run anti-causally plus one
correlation (Nagar & Varma 2025, section 4; DESIGN.md section 4):

* ``grad_blurred = K^-T grad`` (``deblur::causal_solve_transpose``): in the
  frame flipped in both spatial axes the adjoint is again a causal solve.  For
  a depthwise kernel it uses the same kernel array (the anti-causal
  correlation flips the kernel and flipping the image flips it back); for a
  mixing kernel the channels are also reversed and transposed,
  ``K'[d, e] = K[C-1-e, C-1-d]``, which keeps the anchor block lower
  triangular.  The CPU solver walks the image from the bottom-right corner
  instead of copying it into that frame; other backends flip.
* ``grad_kernel[a, b] = - sum_ij grad_blurred[i, j] * x_pad[i + a, j + b]``,
  with ``x_pad`` the solution padded by ``kh-1`` rows on top and ``kw-1``
  columns on the left, summed over the planes that share the kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import backends
from .forms import classify_kernel, flip_dims, to_canonical

__all__ = [
    "causal_solve",
    "causal_solve_transpose",
    "check_invertible",
    "inverse_causal_conv2d",
]


def _solve(blurred: Tensor, kernel: Tensor) -> Tensor:
    B, C, H, W = blurred.shape
    if kernel.dim() == 3:
        planes = blurred.reshape(B * C, H, W)
        return backends.solve_depthwise(planes, kernel).reshape(B, C, H, W)
    return backends.solve_mixing(blurred, kernel)


@torch.library.custom_op("deblur::causal_solve", mutates_args=())
def causal_solve(blurred: Tensor, kernel: Tensor) -> Tensor:
    """Solve ``causal_conv2d_canonical(x, kernel) = blurred`` for ``x``.

    ``blurred`` is ``(B, C, H, W)``; ``kernel`` is canonical: ``(Ck, kh, kw)``
    with ``Ck`` 1 or ``C``, or ``(C, C, kh, kw)``; anchor bottom-right.
    """
    return _solve(blurred, kernel).to(blurred.device)


@causal_solve.register_fake
def _(blurred: Tensor, kernel: Tensor) -> Tensor:
    return torch.empty_like(blurred, memory_format=torch.contiguous_format)


@torch.library.custom_op("deblur::causal_kernel_grad", mutates_args=())
def causal_kernel_grad(grad: Tensor, solution: Tensor, kernel: Tensor) -> Tensor:
    """``-sum grad[i, j] * solution_pad[i + a, j + b]``, shaped like ``kernel``."""
    B, C, H, W = grad.shape
    kh, kw = kernel.shape[-2:]
    if kernel.dim() == 3:
        Ck = kernel.shape[0]
        out = backends.kernel_grad_depthwise(
            grad.reshape(B * C, H, W), solution.reshape(B * C, H, W), Ck, kh, kw
        )
    else:
        padded = torch.nn.functional.pad(solution, (kw - 1, 0, kh - 1, 0))
        out = torch.nn.grad.conv2d_weight(padded, tuple(kernel.shape), grad)
    return (-out).to(device=kernel.device, dtype=kernel.dtype)


@causal_kernel_grad.register_fake
def _(grad: Tensor, solution: Tensor, kernel: Tensor) -> Tensor:
    return torch.empty_like(kernel, memory_format=torch.contiguous_format)


def _adjoint_kernel(kernel: Tensor) -> Tensor:
    if kernel.dim() == 3:
        return kernel
    return kernel.flip(0, 1).transpose(0, 1).contiguous()


@torch.library.custom_op("deblur::causal_solve_transpose", mutates_args=())
def causal_solve_transpose(grad: Tensor, kernel: Tensor) -> Tensor:
    """Solve the adjoint system ``K^T g = grad`` for ``g`` (an anti-causal solve).

    Same arguments as :func:`causal_solve`; this is its backward pass.
    """
    B, C, H, W = grad.shape
    if backends.backend_for(grad.device) == "numba":
        from . import _numba

        g = grad.detach().contiguous().numpy()
        k = kernel.detach().contiguous().numpy()
        if kernel.dim() == 3:
            out = _numba.solve_depthwise(g.reshape(B * C, H, W), k, transpose=True)
        else:
            out = _numba.solve_mixing(g, k, transpose=True)
        return torch.from_numpy(out.reshape(B, C, H, W))
    flip = (-2, -1) if kernel.dim() == 3 else (-3, -2, -1)
    solved = _solve(grad.flip(flip).contiguous(), _adjoint_kernel(kernel))
    return solved.flip(flip).to(grad.device)


@causal_solve_transpose.register_fake
def _(grad: Tensor, kernel: Tensor) -> Tensor:
    return torch.empty_like(grad, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    _, kernel = inputs
    ctx.save_for_backward(kernel, output)


def _backward(ctx, grad):
    kernel, solution = ctx.saved_tensors
    grad_blurred = causal_solve_transpose(grad, kernel)
    grad_kernel = None
    if ctx.needs_input_grad[1]:
        grad_kernel = causal_kernel_grad(grad_blurred, solution, kernel)
    return grad_blurred, grad_kernel


def _backward_transpose(ctx, grad):
    # g = K^-T r:  dg = K^-1 applied to the upstream gradient, and the kernel
    # gradient is the same correlation as the forward op's, with roles swapped
    kernel, solution = ctx.saved_tensors
    grad_rhs = causal_solve(grad, kernel)
    grad_kernel = None
    if ctx.needs_input_grad[1]:
        grad_kernel = causal_kernel_grad(solution, grad_rhs, kernel)
    return grad_rhs, grad_kernel


causal_solve.register_autograd(_backward, setup_context=_setup_context)
causal_solve_transpose.register_autograd(
    _backward_transpose, setup_context=_setup_context
)


def check_invertible(kernel: Tensor) -> None:
    """Raise ``ValueError`` unless the canonical ``kernel`` has an invertible anchor."""
    if kernel.dim() == 3:
        anchors = kernel[:, -1, -1]
        if bool((anchors == 0).any()):
            raise ValueError(
                "kernel anchor tap is zero, so the causal convolution is singular "
                "and has no inverse; the anchor is the corner tap that multiplies "
                "the pixel itself (set anchor= to the corner that holds it)"
            )
        return
    block = kernel[:, :, -1, -1]
    if bool((block.triu(1) != 0).any()):
        raise ValueError(
            "a channel-mixing kernel's anchor block K[:, :, anchor] must be lower "
            f"triangular, got non-zero entries above the diagonal of a "
            f"{block.shape[0]}x{block.shape[1]} block"
        )
    if bool((block.diagonal() == 0).any()):
        raise ValueError(
            "a channel-mixing kernel's anchor block has a zero on its diagonal, "
            "so the system is singular"
        )


def inverse_causal_conv2d(
    blurred: Tensor, kernel: Tensor, anchor: str = "bottom-right"
) -> Tensor:
    """Undo a causal convolution exactly.

    Return ``x`` with ``causal_conv2d(x, kernel, anchor) == blurred``.

    Parameters
    ----------
    blurred : (B, C, H, W) Tensor
        float32 or float64, any size (1 x N and N x 1 too), any device.
    kernel : (kh, kw), (C, kh, kw) or (C, C, kh, kw) Tensor
        The causal kernel that blurred it; see :func:`causal_conv2d`.
        Differentiable: gradients flow to ``blurred`` and ``kernel``.
    anchor : {"bottom-right", "bottom-left", "top-right", "top-left"}
        Corner of the kernel array holding the anchor tap.

    Returns
    -------
    restored : (B, C, H, W) Tensor
        Same size, dtype and device as ``blurred``.

    Raises
    ------
    TypeError
        If ``blurred`` is not a floating-point tensor.
    ValueError
        If the shapes do not fit, the anchor is not a corner, or the anchor tap
        is zero (a singular system).

    Notes
    -----
    Forward substitution in raster order on the CPU (compiled, planes in
    parallel), a single-launch wavefront over the ``H + W - 1`` anti-diagonals
    on a GPU.  The inverse is exact, but it amplifies noise in ``blurred`` by
    the kernel's noise gain; see :func:`deblur.kernel.noise_gain`.  Do not use
    it for a centred blur (its anchor is not a corner): use a regularised
    method instead.

    Examples
    --------
    >>> k = torch.tensor([[0.0, 0.5], [0.0, 1.0]])
    >>> x = torch.rand(1, 1, 4, 5, dtype=torch.float64)
    >>> y = causal_conv2d(x, k.double())
    >>> torch.allclose(inverse_causal_conv2d(y, k.double()), x)
    True
    """
    if not isinstance(blurred, Tensor):
        raise TypeError(
            "blurred must be a floating-point tensor, got "
            f"{type(blurred).__name__}; convert it with torch.as_tensor"
        )
    if not blurred.is_floating_point():
        raise TypeError(
            f"blurred must be a floating-point tensor, got {blurred.dtype}; "
            "convert it with .float() (and scale integer images to [0, 1])"
        )
    if blurred.dim() != 4:
        raise ValueError(
            f"blurred must be (B, C, H, W), got shape {tuple(blurred.shape)}"
        )
    if blurred.dtype not in (torch.float32, torch.float64):
        blurred = blurred.float()
    classify_kernel(kernel, blurred.shape[1])
    canon = to_canonical(kernel.to(device=blurred.device, dtype=blurred.dtype), anchor)
    check_invertible(canon.detach())

    dims = flip_dims(anchor)
    if dims:
        blurred = blurred.flip(dims)
    blurred = blurred.contiguous()
    if _needs_op(blurred, canon):
        restored = causal_solve(blurred, canon)
    else:
        # Inference: call the solver itself.  Going through the custom op
        # costs nothing per call but its first call imports torch._dynamo
        # (1 to 3 s), which every command-line run would pay.
        with torch.no_grad():
            restored = _solve(blurred, canon).to(blurred.device)
    if dims:
        restored = restored.flip(dims)
    return restored


def _needs_op(blurred: Tensor, kernel: Tensor) -> bool:
    """True when autograd, tracing or a fake tensor needs the registered op."""
    if torch.is_grad_enabled() and (blurred.requires_grad or kernel.requires_grad):
        return True
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return True
    return type(blurred) is not Tensor or type(kernel) is not Tensor


from .blur import causal_conv2d  # noqa: E402,F401  (for the docstring example)
