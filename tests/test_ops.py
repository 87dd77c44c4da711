"""The operator: causal blur, its exact inverse, the gradients, the refusals.

References are dense linear algebra in float64: the operator's matrix built
here by loops from its definition (DESIGN.md section 2), and solves with it.
"""

import numba
import pytest
import torch
from torch.autograd import gradcheck

from deblur.ops import ANCHORS, _numba, causal_conv2d, inverse_causal_conv2d
from deblur.ops.dense import dense_matrix
from deblur.ops.solve import causal_kernel_grad, causal_solve, causal_solve_transpose

TOL = {
    torch.float32: dict(rtol=1e-4, atol=2e-5),
    torch.float64: dict(rtol=1e-10, atol=1e-11),
}
KERNEL_SIZES = [(1, 1), (2, 3), (3, 3), (5, 5), (1, 4), (4, 1)]
IMAGE_SIZES = [(7, 9), (5, 5), (1, 8), (8, 1), (1, 1)]
FORMS = ["shared", "per-channel", "mixing"]
# where each anchor sits in a (kh, kw) kernel array
CORNER = {
    "bottom-right": lambda kh, kw: (kh - 1, kw - 1),
    "bottom-left": lambda kh, kw: (kh - 1, 0),
    "top-right": lambda kh, kw: (0, kw - 1),
    "top-left": lambda kh, kw: (0, 0),
}


# -- inputs and references ------------------------------------------------------


def _kernel(form, C, kh, kw, anchor="bottom-right", dtype=torch.float64, seed=0):
    """A stable random kernel: each anchor outweighs the sum of the other taps."""
    g = torch.Generator().manual_seed(seed)
    shape = {"shared": (kh, kw), "per-channel": (C, kh, kw), "mixing": (C, C, kh, kw)}
    k = torch.rand(shape[form], generator=g, dtype=torch.float64) - 0.5
    taps = (C if form == "mixing" else 1) * kh * kw - 1  # per equation
    k *= 1.5 / max(1, taps)
    ai, aj = CORNER[anchor](kh, kw)
    if form == "mixing":
        signs = torch.tensor([1.5, -1.25]).repeat(C)[:C].double()
        k[:, :, ai, aj] = k[:, :, ai, aj].tril(-1) + torch.diag(signs)
    elif form == "per-channel":
        k[:, ai, aj] = torch.tensor([1.5, -1.25]).repeat(C)[:C].double()
    else:
        k[ai, aj] = -1.25
    return k.to(dtype)


def _definition_matrix(kernel, C, H, W, anchor):
    """The operator's (C*H*W)^2 matrix, entry by entry from its definition.

    With the anchor at (ai, aj): ``y[c, i, j] = sum K[c, e, a, b] *
    x[e, i + a - ai, j + b - aj]``, zero outside the image.
    """
    kh, kw = kernel.shape[-2:]
    if kernel.dim() == 2:
        kernel = torch.diag_embed(kernel.expand(C, kh, kw).permute(1, 2, 0))
        kernel = kernel.permute(2, 3, 0, 1)
    elif kernel.dim() == 3:
        kernel = torch.diag_embed(kernel.permute(1, 2, 0)).permute(2, 3, 0, 1)
    ai, aj = CORNER[anchor](kh, kw)
    A = torch.zeros(C * H * W, C * H * W, dtype=torch.float64)
    for c in range(C):
        for e in range(C):
            for i in range(H):
                for j in range(W):
                    for a in range(kh):
                        for b in range(kw):
                            u, v = i + a - ai, j + b - aj
                            if 0 <= u < H and 0 <= v < W:
                                A[(c * H + i) * W + j, (e * H + u) * W + v] += float(
                                    kernel[c, e, a, b]
                                )
    return A


def _dense_solve(y, kernel, anchor, transpose=False):
    """Solve with the dense float64 matrix of the operator."""
    B, C, H, W = y.shape
    A = dense_matrix(kernel.double(), C, H, W, anchor)
    if transpose:
        A = A.T
    x = torch.linalg.solve(A, y.double().reshape(B, -1).T)
    return x.T.reshape(B, C, H, W)


def _image(B, C, H, W, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, H, W, generator=g, dtype=torch.float64).to(dtype)


# -- the blur -------------------------------------------------------------------


@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize("form", FORMS)
def test_causal_conv2d_matches_definition_matrix(form, anchor):
    C, H, W = 2, 4, 5
    kernel = _kernel(form, C, 2, 3, anchor)
    x = _image(2, C, H, W)
    A = _definition_matrix(kernel, C, H, W, anchor)

    y = causal_conv2d(x, kernel, anchor)

    expected = (A @ x.reshape(2, -1).T).T.reshape(x.shape)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dense_matrix(kernel, C, H, W, anchor), A)


def test_causal_conv2d_impulse_smears_down_and_right():
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 1, 1] = 1.0
    kernel = torch.tensor([[0.25, 0.5], [0.125, 1.0]], dtype=torch.float64)

    y = causal_conv2d(x, kernel)[0, 0]

    assert y[1, 1] == 1.0  # the anchor multiplies the pixel itself
    assert y[1, 2] == 0.125 and y[2, 1] == 0.5 and y[2, 2] == 0.25
    assert y.sum() == kernel.sum()


# -- the inverse against the dense solve ----------------------------------------


def _check_against_dense(form, kernel_size, anchor, dtype, image_sizes):
    C = 3
    kernel = _kernel(form, C, *kernel_size, anchor)
    for H, W in image_sizes:
        y = _image(2, C, H, W)
        expected = _dense_solve(y, kernel, anchor)

        x = inverse_causal_conv2d(y.to(dtype), kernel.to(dtype), anchor)

        assert x.dtype == dtype and x.shape == y.shape
        torch.testing.assert_close(x.double(), expected, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel_size", KERNEL_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("form", FORMS)
def test_inverse_causal_conv2d_matches_dense_solve(form, kernel_size, dtype):
    _check_against_dense(form, kernel_size, "bottom-right", dtype, IMAGE_SIZES)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize("form", FORMS)
def test_inverse_causal_conv2d_anchor_matches_dense_solve(form, anchor, dtype):
    for kernel_size in [(2, 3), (3, 1)]:
        _check_against_dense(form, kernel_size, anchor, dtype, [(7, 9), (1, 8), (8, 1)])


@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize("form", FORMS)
def test_causal_conv2d_after_inverse_is_identity(form, anchor):
    kernel = _kernel(form, 3, 3, 3, anchor, dtype=torch.float32)
    y = _image(2, 3, 33, 70, dtype=torch.float32)

    x = inverse_causal_conv2d(y, kernel, anchor)

    torch.testing.assert_close(
        causal_conv2d(x, kernel, anchor), y, **TOL[torch.float32]
    )


@pytest.mark.parametrize("anchor", ANCHORS)
def test_inverse_causal_conv2d_impulse_returns_to_its_pixel(anchor):
    kernel = _kernel("shared", 1, 3, 4, anchor)
    sharp = torch.zeros(1, 1, 9, 10, dtype=torch.float64)
    sharp[0, 0, 4, 6] = 1.0
    blurred = causal_conv2d(sharp, kernel, anchor)
    assert (blurred != 0).sum() > 1

    restored = inverse_causal_conv2d(blurred, kernel, anchor)

    assert restored.abs().argmax().item() == 4 * 10 + 6
    torch.testing.assert_close(restored, sharp, rtol=0, atol=1e-14)


@pytest.mark.parametrize("form", FORMS)
def test_causal_solve_transpose_matches_dense_adjoint(form):
    kernel = _kernel(form, 3, 3, 2)
    canon = kernel.unsqueeze(0) if kernel.dim() == 2 else kernel
    y = _image(2, 3, 6, 7)

    g = causal_solve_transpose(y, canon)

    torch.testing.assert_close(g, _dense_solve(y, kernel, "bottom-right", True))


# -- threads: one plane is cut into strips that run as a wavefront ---------------


@pytest.mark.skipif(
    numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads"
)
@pytest.mark.parametrize("strips, group, kernel_size", [(2, 1, (3, 5)), (3, 2, (2, 3))])
@pytest.mark.parametrize("transpose", [False, True], ids=["solve", "transpose"])
@pytest.mark.parametrize("form", FORMS)
def test_solver_strip_wavefront_equals_one_thread(
    form, transpose, strips, group, kernel_size, monkeypatch
):
    C = 1 if form == "shared" else 3
    kernel = _kernel(form, C, *kernel_size)
    canon = kernel.unsqueeze(0) if kernel.dim() == 2 else kernel
    y = _image(1, C, 70, 300)
    solve = _numba.solve_mixing if form == "mixing" else _numba.solve_depthwise
    y_np = y.numpy() if form == "mixing" else y.reshape(C, 70, 300).numpy()

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = solve(y_np, canon.numpy(), transpose=transpose)
        numba.set_num_threads(2)
        # column strips of 150 or 100 and blocks of 16 rows, alone or in pairs
        monkeypatch.setattr(_numba, "_split", lambda *args: (strips, 16, group))
        two = solve(y_np, canon.numpy(), transpose=transpose)
    finally:
        numba.set_num_threads(before)

    torch.testing.assert_close(torch.from_numpy(two), torch.from_numpy(one))
    if not transpose:
        x = torch.from_numpy(two).reshape(y.shape)
        torch.testing.assert_close(causal_conv2d(x, kernel), y)


def test_split_gives_every_thread_work_on_one_gray_plane():
    if numba.get_num_threads() < 2:
        pytest.skip("one numba thread: nothing to split")
    strips, row_block, group = _numba._split(1, 1024, 1024, 1.24)

    assert strips >= 2 and row_block < 1024 and group == 1


# -- gradients ------------------------------------------------------------------


@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize("form", FORMS)
def test_inverse_causal_conv2d_gradcheck(form, anchor):
    C = 2
    kernel = _kernel(form, C, 2, 3, anchor)
    y = _image(1, C, 4, 5).requires_grad_()
    # perturbing the zeros above a mixing anchor block's diagonal would make
    # it singular, so those entries are masked out of the parameters
    mask = torch.ones_like(kernel)
    if form == "mixing":
        ai, aj = CORNER[anchor](2, 3)
        mask[:, :, ai, aj] = torch.ones(C, C, dtype=torch.float64).tril()
    weight = kernel.clone().requires_grad_()

    def f(y, weight):
        return inverse_causal_conv2d(y, weight * mask, anchor)

    assert gradcheck(f, (y, weight))


def test_inverse_causal_conv2d_float32_gradients_match_float64():
    kernel = _kernel("per-channel", 3, 5, 5)
    y = _image(1, 3, 96, 160)
    upstream = _image(1, 3, 96, 160, seed=5)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        yy = y.to(dtype).requires_grad_()
        kk = kernel.to(dtype).requires_grad_()
        inverse_causal_conv2d(yy, kk).backward(upstream.to(dtype))
        grads[dtype] = (yy.grad, kk.grad)

    for g32, g64 in zip(grads[torch.float32], grads[torch.float64], strict=True):
        scale = g64.abs().max()
        torch.testing.assert_close(g32.double() / scale, g64 / scale, rtol=0, atol=1e-5)


def _canonical_samples():
    y = _image(2, 3, 5, 6).requires_grad_()
    shared = _kernel("shared", 3, 2, 3).unsqueeze(0)
    per_channel = _kernel("per-channel", 3, 3, 2)
    mixing = _kernel("mixing", 3, 2, 2)
    for kernel in (shared, per_channel, mixing):
        yield y, kernel.requires_grad_()
        yield y.detach().float(), kernel.detach().float()


@pytest.mark.parametrize("op", [causal_solve, causal_solve_transpose])
def test_causal_solve_opcheck(op):
    for y, kernel in _canonical_samples():
        torch.library.opcheck(op, (y, kernel))


def test_causal_kernel_grad_opcheck():
    for y, kernel in _canonical_samples():
        solution = _image(*y.shape, dtype=y.dtype, seed=3)
        torch.library.opcheck(
            causal_kernel_grad, (y.detach(), solution, kernel.detach())
        )


@pytest.mark.parametrize("kernel_size", [(3, 2), (5, 5), (2, 7), (1, 4), (6, 9)])
@pytest.mark.parametrize("form", FORMS)
def test_causal_kernel_grad_matches_autograd_of_the_blur(form, kernel_size):
    # (5, 5), (2, 7) and (6, 9) are taller or wider than the 4 x 6 image
    kernel = _kernel(form, 3, *kernel_size)
    canon = kernel.unsqueeze(0) if kernel.dim() == 2 else kernel
    grad, solution = _image(2, 3, 4, 6), _image(2, 3, 4, 6, seed=4)

    out = causal_kernel_grad(grad, solution, canon)

    # d<grad, K x> / dK is the correlation of grad with the padded x
    weight = canon.clone().requires_grad_()
    blurred = causal_conv2d(solution, weight if kernel.dim() > 2 else weight[0])
    (-(grad * blurred).sum()).backward()
    torch.testing.assert_close(out, weight.grad)


# -- what is kept ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inverse_causal_conv2d_keeps_shape_dtype_device(dtype):
    y = _image(3, 2, 6, 11, dtype=dtype)

    x = inverse_causal_conv2d(y, _kernel("per-channel", 2, 3, 3, dtype=dtype))

    assert (x.shape, x.dtype, x.device) == (y.shape, dtype, y.device)
    assert x.is_contiguous()


@pytest.mark.parametrize(
    "view",
    [
        lambda t: t.transpose(-1, -2),
        lambda t: t[:, :, ::2, 1::3],
        lambda t: t.contiguous(memory_format=torch.channels_last),
        lambda t: t[:, :1].expand(-1, 3, -1, -1),
    ],
    ids=["transposed", "strided", "channels_last", "expanded"],
)
def test_inverse_causal_conv2d_non_contiguous_input_equals_contiguous(view):
    y = view(_image(2, 3, 12, 15, dtype=torch.float32))
    kernel = _kernel("mixing", 3, 2, 3, dtype=torch.float32)
    assert not y.is_contiguous()

    x = inverse_causal_conv2d(y, kernel)

    torch.testing.assert_close(x, inverse_causal_conv2d(y.contiguous(), kernel))


def test_inverse_causal_conv2d_non_contiguous_gradient_flows():
    y = _image(1, 3, 10, 12).requires_grad_()
    kernel = _kernel("shared", 3, 3, 3).requires_grad_()

    # sum() sends back an expanded (stride 0) gradient
    inverse_causal_conv2d(y.transpose(-1, -2), kernel).sum().backward()

    expected = _dense_solve(
        torch.ones(1, 3, 12, 10), kernel.detach(), "bottom-right", True
    )
    torch.testing.assert_close(y.grad, expected.transpose(-1, -2))
    assert torch.isfinite(kernel.grad).all()


# -- refusals, each beside a near miss that is accepted ---------------------------


def test_inverse_causal_conv2d_zero_anchor_raises():
    kernel = torch.tensor([[0.5, 0.2], [0.1, 0.0]])
    y = torch.rand(1, 1, 4, 4)
    inverse_causal_conv2d(y, kernel, anchor="top-left")  # 0.5 is the anchor there

    with pytest.raises(ValueError, match="anchor tap is zero"):
        inverse_causal_conv2d(y, kernel)


def test_inverse_causal_conv2d_non_triangular_mixing_block_raises():
    kernel = _kernel("mixing", 2, 2, 2)
    y = torch.rand(1, 2, 4, 4, dtype=torch.float64)
    inverse_causal_conv2d(y, kernel)
    kernel[0, 1, -1, -1] = 0.1

    with pytest.raises(ValueError, match="must be lower triangular"):
        inverse_causal_conv2d(y, kernel)


def test_inverse_causal_conv2d_zero_on_mixing_diagonal_raises():
    kernel = _kernel("mixing", 2, 2, 2)
    kernel[1, 1, -1, -1] = 0.0

    with pytest.raises(ValueError, match="zero on its diagonal"):
        inverse_causal_conv2d(torch.rand(1, 2, 4, 4, dtype=torch.float64), kernel)


def test_inverse_causal_conv2d_center_anchor_points_to_wiener():
    kernel = torch.rand(3, 3) + 1.0
    y = torch.rand(1, 1, 5, 5)
    causal_conv2d(y, kernel, anchor="top-left")

    with pytest.raises(ValueError, match=r"not causal.*--method wiener"):
        inverse_causal_conv2d(y, kernel, anchor="center")


def test_inverse_causal_conv2d_unknown_anchor_lists_the_corners():
    with pytest.raises(ValueError, match="bottom-right, bottom-left, top-right"):
        inverse_causal_conv2d(torch.rand(1, 1, 3, 3), torch.ones(2, 2), "bottom")


def test_inverse_causal_conv2d_wrong_channel_count_raises():
    y = torch.rand(1, 3, 5, 5)
    inverse_causal_conv2d(y, torch.rand(3, 2, 2) + 1)

    with pytest.raises(ValueError, match="kernel has 2 channels .* the image has 3"):
        inverse_causal_conv2d(y, torch.rand(2, 2, 2) + 1)


def test_inverse_causal_conv2d_non_square_mixing_kernel_raises():
    with pytest.raises(ValueError, match=r"must be \(C, C, kh, kw\)"):
        inverse_causal_conv2d(torch.rand(1, 3, 5, 5), torch.rand(3, 2, 2, 2))


def test_inverse_causal_conv2d_integer_image_raises():
    kernel = torch.tensor([[0.0, 0.5], [0.0, 1.0]])
    inverse_causal_conv2d(torch.ones(1, 1, 3, 3), kernel)

    with pytest.raises(TypeError, match="floating-point tensor, got torch.int64"):
        inverse_causal_conv2d(torch.ones(1, 1, 3, 3, dtype=torch.int64), kernel)


def test_inverse_causal_conv2d_numpy_image_raises():
    with pytest.raises(TypeError, match="floating-point tensor, got ndarray"):
        inverse_causal_conv2d(torch.ones(1, 1, 3, 3).numpy(), torch.ones(2, 2))


@pytest.mark.parametrize("shape", [(3, 3), (1, 3, 3), (1, 1, 1, 3, 3)])
def test_inverse_causal_conv2d_wrong_image_ndim_raises(shape):
    with pytest.raises(ValueError, match=r"must be \(B, C, H, W\), got shape"):
        inverse_causal_conv2d(torch.rand(shape), torch.ones(2, 2))


@pytest.mark.parametrize("shape", [(3,), (1, 1, 1, 2, 2)])
def test_inverse_causal_conv2d_wrong_kernel_ndim_raises(shape):
    with pytest.raises(ValueError, match=r"kernel must be \(kh, kw\), \(C, kh, kw\)"):
        inverse_causal_conv2d(torch.rand(1, 1, 3, 3), torch.ones(shape))
