"""Every solver backend against the dense float64 solve.

Triton decides when its kernels are decorated whether they compile for a GPU
or run under its interpreter (numpy on the CPU), so ``TRITON_INTERPRET`` is
set here, before ``deblur.ops._triton`` is first imported, on machines without
a CUDA GPU.  With a GPU the same tests run the compiled kernels on it.
"""

import functools
import importlib.util
import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from deblur.ops import _numba, backends, wavefront
from deblur.ops.blur import causal_conv2d
from deblur.ops.dense import dense_inverse
from deblur.ops.solve import inverse_causal_conv2d

TOL = {torch.float32: 2e-5, torch.float64: 1e-11}
KERNEL_SIZES = [(1, 1), (2, 3), (3, 3), (5, 5), (1, 4), (4, 1)]
SIZES = [(5, 7), (7, 4), (1, 9), (9, 1), (6, 6)]
CHANNELS = [1, 2, 3, 4, 5, 8, 12]
DTYPES = [
    pytest.param(torch.float32, id="float32"),
    pytest.param(torch.float64, id="float64"),
]


# -- inputs ---------------------------------------------------------------------


def _depthwise_kernel(Ck, kh, kw, seed=0):
    """Stable random kernels: |anchor| = 1.5 exceeds the sum of the other taps."""
    g = torch.Generator().manual_seed(seed)
    k = torch.rand(Ck, kh, kw, generator=g, dtype=torch.float64) - 0.5
    k *= 1.2 / max(1, kh * kw - 1)
    k[:, -1, -1] = 1.5 * torch.tensor([1.0, -1.0]).repeat(Ck)[:Ck]
    return k


def _mixing_kernel(C, kh, kw, seed=0):
    """A stable mixing kernel whose anchor block is lower triangular."""
    g = torch.Generator().manual_seed(seed)
    k = torch.rand(C, C, kh, kw, generator=g, dtype=torch.float64) - 0.5
    k *= 1.2 / max(1, C * kh * kw - 1)
    block = k[:, :, -1, -1].tril(-1)
    block += torch.diag(1.5 * torch.tensor([1.0, -1.0]).repeat(C)[:C])
    k[:, :, -1, -1] = block
    return k


def _blurred(B, C, H, W, kernel, seed=1):
    """Blur a random image with ``kernel`` in float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, C, H, W, generator=g, dtype=torch.float64)
    return causal_conv2d(x, kernel)


def _reference_depthwise(y, kernel):
    """Dense float64 solve of ``(P, H, W)`` planes with ``(Ck, kh, kw)`` kernels."""
    P, H, W = y.shape
    Ck = kernel.shape[0]
    planes = y.to(torch.float64).reshape(P // Ck, Ck, H, W)
    return dense_inverse(planes, kernel.to(torch.float64)).reshape(P, H, W)


def _reference_mixing(y, kernel):
    return dense_inverse(y.to(torch.float64), kernel.to(torch.float64))


@functools.cache  # shared by the backends; never mutated
def _depthwise_case(Ck, planes, H, W, kh, kw, dtype, seed=0):
    kernel = _depthwise_kernel(Ck, kh, kw, seed)
    y = _blurred(planes // Ck, Ck, H, W, kernel, seed + 1).reshape(planes, H, W)
    return y.to(dtype), kernel.to(dtype), _reference_depthwise(y, kernel)


@functools.cache
def _mixing_case(B, C, H, W, kh, kw, dtype, seed=0):
    kernel = _mixing_kernel(C, kh, kw, seed)
    y = _blurred(B, C, H, W, kernel, seed + 1)
    return y.to(dtype), kernel.to(dtype), _reference_mixing(y, kernel)


def _size_id(size):
    return "x".join(map(str, size))


def _case_id(first, second):
    def name(case):
        a, b, H, W, kh, kw = case
        return f"{first}{a}-{second}{b}-{H}x{W}-k{kh}x{kw}"

    return name


def _assert_solves(x, reference, dtype):
    assert x.dtype == dtype
    assert x.shape == reference.shape
    torch.testing.assert_close(
        x.to(torch.float64), reference, rtol=TOL[dtype], atol=TOL[dtype]
    )


# -- backends as (y, kernel) -> x on torch tensors --------------------------------


def _numba_depthwise(y, kernel):
    return torch.from_numpy(_numba.solve_depthwise(y.numpy(), kernel.numpy()))


def _numba_mixing(y, kernel):
    return torch.from_numpy(_numba.solve_mixing(y.numpy(), kernel.numpy()))


DEPTHWISE = {"wavefront": wavefront.solve_depthwise, "numba": _numba_depthwise}
MIXING = {"wavefront": wavefront.solve_mixing, "numba": _numba_mixing}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Run this module's tiny tensors on one thread, then restore the count.

    On a busy two-core machine, waking the thread pool for 6 x 7 planes costs
    more than the work: the module runs about twice as fast on one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def triton_ops():
    """``deblur.ops._triton`` and the device its kernels run on."""
    pytest.importorskip("triton", reason="triton is not installed (pip install triton)")
    from deblur.ops import _triton

    if _triton.INTERPRETED:
        return _triton, torch.device("cpu")
    if not torch.cuda.is_available():
        pytest.skip(
            "deblur.ops._triton was imported with TRITON_INTERPRET off and there is "
            "no CUDA GPU to compile for"
        )
    return _triton, torch.device("cuda")


# -- wavefront and numba: the full matrix ---------------------------------------


@pytest.mark.parametrize("backend", sorted(DEPTHWISE))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel_size", KERNEL_SIZES, ids=_size_id)
@pytest.mark.parametrize("size", SIZES, ids=_size_id)
@pytest.mark.parametrize("Ck", [1, 3])
def test_solve_depthwise_backend_matches_dense(backend, dtype, kernel_size, size, Ck):
    y, kernel, reference = _depthwise_case(Ck, 6, *size, *kernel_size, dtype)

    x = DEPTHWISE[backend](y, kernel)

    _assert_solves(x, reference, dtype)


@pytest.mark.parametrize("backend", sorted(MIXING))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", CHANNELS)
def test_solve_mixing_backend_channels_match_dense(backend, dtype, C):
    y, kernel, reference = _mixing_case(2, C, 3, 4, 2, 3, dtype)

    x = MIXING[backend](y, kernel)

    _assert_solves(x, reference, dtype)


@pytest.mark.parametrize("backend", sorted(MIXING))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel_size", KERNEL_SIZES, ids=_size_id)
@pytest.mark.parametrize("size", SIZES, ids=_size_id)
def test_solve_mixing_backend_sizes_match_dense(backend, dtype, kernel_size, size):
    y, kernel, reference = _mixing_case(2, 3, *size, *kernel_size, dtype)

    x = MIXING[backend](y, kernel)

    _assert_solves(x, reference, dtype)


def test_wavefront_depthwise_non_contiguous_input_matches_contiguous():
    y, kernel, reference = _depthwise_case(1, 2, 6, 5, 3, 2, torch.float64)
    y_t = y.transpose(1, 2).contiguous().transpose(1, 2)
    assert not y_t.is_contiguous()

    _assert_solves(wavefront.solve_depthwise(y_t, kernel), reference, torch.float64)


def test_wavefront_empty_input_returns_empty():
    kernel = _depthwise_kernel(1, 3, 3)

    x = wavefront.solve_depthwise(torch.empty(0, 4, 5, dtype=torch.float64), kernel)

    assert x.shape == (0, 4, 5)


def test_wavefront_identity_kernel_divides_by_anchor():
    y = torch.arange(12.0).reshape(1, 3, 4)
    kernel = torch.zeros(1, 2, 2)
    kernel[0, -1, -1] = 2.0

    x = wavefront.solve_depthwise(y, kernel)

    torch.testing.assert_close(x, y / 2)


# -- triton: tiny cases, the interpreter is slow ------------------------------------


TRITON_DEPTHWISE = [
    # (Ck, planes, H, W, kh, kw)
    (1, 2, 5, 7, 3, 3),
    (1, 1, 5, 7, 1, 1),
    (1, 1, 5, 7, 2, 3),
    (1, 1, 4, 5, 5, 5),
    (1, 1, 1, 9, 1, 4),
    (1, 1, 9, 1, 4, 1),
    (3, 3, 4, 6, 2, 3),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TRITON_DEPTHWISE, ids=_case_id("Ck", "P"))
def test_triton_depthwise_matches_dense(triton_ops, dtype, case):
    _triton, device = triton_ops
    y, kernel, reference = _depthwise_case(*case, dtype)

    x = _triton.solve_depthwise(y.to(device), kernel.to(device))

    assert x.device.type == device.type
    _assert_solves(x.cpu(), reference, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_depthwise_chunked_diagonals_match_dense(triton_ops, dtype):
    # block_size=2 cuts the 5-pixel diagonals of a 5x7 plane into 3 chunks
    _triton, device = triton_ops
    y, kernel, reference = _depthwise_case(1, 1, 5, 7, 2, 2, dtype)

    x = _triton.solve_depthwise(y.to(device), kernel.to(device), block_size=2)

    _assert_solves(x.cpu(), reference, dtype)


TRITON_MIXING = [
    # (B, C, H, W, kh, kw)
    (1, 1, 3, 4, 2, 2),
    (2, 2, 3, 4, 2, 3),
    (1, 3, 3, 4, 1, 1),
    (1, 3, 1, 5, 1, 2),
    (1, 2, 5, 1, 2, 1),
    (1, 4, 2, 3, 2, 2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TRITON_MIXING, ids=_case_id("B", "C"))
def test_triton_mixing_matches_dense(triton_ops, dtype, case):
    _triton, device = triton_ops
    y, kernel, reference = _mixing_case(*case, dtype)

    x = _triton.solve_mixing(y.to(device), kernel.to(device))

    _assert_solves(x.cpu(), reference, dtype)


def test_triton_mixing_chunked_diagonals_match_dense(triton_ops):
    _triton, device = triton_ops
    y, kernel, reference = _mixing_case(1, 2, 3, 4, 2, 2, torch.float64)

    x = _triton.solve_mixing(y.to(device), kernel.to(device), block_size=2)

    _assert_solves(x.cpu(), reference, torch.float64)


def test_triton_block_size_not_power_of_two_raises(triton_ops):
    _triton, device = triton_ops
    y, kernel, _ = _depthwise_case(1, 1, 3, 3, 2, 2, torch.float32)

    with pytest.raises(ValueError, match="power of two, got 3"):
        _triton.solve_depthwise(y.to(device), kernel.to(device), block_size=3)


def test_triton_half_precision_raises(triton_ops):
    _triton, device = triton_ops
    y = torch.ones(1, 2, 2, dtype=torch.float16, device=device)

    with pytest.raises(TypeError, match="float32 or float64, got torch.float16"):
        _triton.solve_depthwise(y, torch.ones(1, 1, 1, device=device))


def test_triton_module_without_triton_raises_import_error(monkeypatch):
    # load a private copy of the module while `import triton` fails
    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.setitem(sys.modules, "triton.language", None)
    path = Path(backends.__file__).with_name("_triton.py")
    spec = importlib.util.spec_from_file_location("_triton_without_triton", path)
    module = importlib.util.module_from_spec(spec)

    with pytest.raises(ImportError, match="set DEBLUR_BACKEND=wavefront"):
        spec.loader.exec_module(module)


def test_triton_kernels_compile_for_cuda_without_gpu(triton_ops):
    # The interpreter runs the kernels as Python, so it cannot tell whether
    # they lower to PTX; compiling for an sm_90 target needs no GPU.
    triton = pytest.importorskip("triton")
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from triton.runtime.jit import JITFunction
    except ImportError:
        pytest.skip("this triton has no ASTSource/GPUTarget to compile ahead of time")
    _triton, _ = triton_ops
    pointers = {"y_ptr": "*fp64", "kernel_ptr": "*fp64", "x_ptr": "*fp64"}
    constexprs = {"kh": 3, "kw": 2, "BLOCK_SIZE": 128}
    for kernel, scalars in (
        (_triton._depthwise_kernel, ("H", "W", "Ck")),
        (_triton._mixing_kernel, ("C", "H", "W")),
    ):
        signature = {**pointers, **dict.fromkeys(scalars, "i32")}
        signature.update(dict.fromkeys(constexprs, "constexpr"))
        source = ASTSource(
            JITFunction(kernel.fn), signature=signature, constexprs=constexprs
        )
        compiled = triton.compile(
            source,
            target=GPUTarget("cuda", 90, 32),
            options={"num_warps": 1, "enable_fp_fusion": True},
        )
        assert "bar.sync" in compiled.asm["ptx"]


# -- the public path, with DEBLUR_BACKEND ---------------------------------------


def _public_case(form, dtype):
    # anchor top-left, so that the flips to the canonical form are checked too
    if form == "shared":
        kernel = _depthwise_kernel(1, 2, 3)[0]
    elif form == "per-channel":
        kernel = _depthwise_kernel(2, 2, 3)
    else:
        kernel = _mixing_kernel(2, 2, 3)
    kernel = kernel.flip(-2, -1)
    x = torch.rand(2, 2, 4, 5, generator=torch.Generator().manual_seed(3))
    y = causal_conv2d(x.to(torch.float64), kernel, anchor="top-left")
    reference = dense_inverse(y, kernel, anchor="top-left")
    return y.to(dtype), kernel.to(dtype), reference


FORMS = ["shared", "per-channel", "mixing"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("backend", ["wavefront", "numba"])
def test_inverse_causal_conv2d_backend_env_matches_dense(monkeypatch, backend, form):
    monkeypatch.setenv("DEBLUR_BACKEND", backend)
    y, kernel, reference = _public_case(form, torch.float32)
    assert backends.backend_for(y.device) == backend

    x = inverse_causal_conv2d(y, kernel, anchor="top-left")

    _assert_solves(x, reference, torch.float32)


@pytest.mark.parametrize("form", FORMS)
def test_inverse_causal_conv2d_triton_env_matches_dense(monkeypatch, triton_ops, form):
    _, device = triton_ops
    monkeypatch.setenv("DEBLUR_BACKEND", "triton")
    y, kernel, reference = _public_case(form, torch.float64)

    x = inverse_causal_conv2d(y.to(device), kernel.to(device), anchor="top-left")

    assert x.device.type == device.type
    _assert_solves(x.cpu(), reference, torch.float64)


@pytest.mark.parametrize("form", ["per-channel", "mixing"])
def test_inverse_causal_conv2d_triton_gradcheck(monkeypatch, triton_ops, form):
    _, device = triton_ops
    monkeypatch.setenv("DEBLUR_BACKEND", "triton")
    if form == "mixing":
        kernel = _mixing_kernel(2, 1, 2)
    else:
        kernel = _depthwise_kernel(2, 2, 2)
    # keep the anchor block lower triangular while gradcheck perturbs it
    free = torch.ones_like(kernel)
    if form == "mixing":
        free[0, 1, -1, -1] = 0.0
    y = _blurred(1, 2, 2, 3, kernel).to(device).requires_grad_()
    kernel = kernel.to(device).requires_grad_()
    free = free.to(device)

    def solve(blurred, kernel):
        return inverse_causal_conv2d(blurred, kernel * free)

    # fast mode: a few random directions, each interpreted solve costs ~0.1 s
    assert torch.autograd.gradcheck(solve, (y, kernel), fast_mode=True)


# -- a real GPU ---------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_cuda_matches_wavefront(triton_ops, dtype):
    _triton, device = triton_ops
    assert device.type == "cuda", "TRITON_INTERPRET is set; unset it to compile"
    g = torch.Generator().manual_seed(5)
    y = torch.rand(2, 3, 70, 300, generator=g, dtype=dtype).to(device)
    kernel = _depthwise_kernel(3, 5, 4).to(device=device, dtype=dtype)
    mixing = _mixing_kernel(3, 3, 3).to(device=device, dtype=dtype)

    depthwise = _triton.solve_depthwise(y.reshape(6, 70, 300), kernel, block_size=32)
    mixed = _triton.solve_mixing(y, mixing, block_size=32)

    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(
        depthwise,
        wavefront.solve_depthwise(y.reshape(6, 70, 300), kernel),
        rtol=tol,
        atol=tol,
    )
    torch.testing.assert_close(
        mixed, wavefront.solve_mixing(y, mixing), rtol=tol, atol=tol
    )
