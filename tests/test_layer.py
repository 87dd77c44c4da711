"""The flow layer and the log-determinant, against dense float64 linear algebra."""

import pytest
import torch

from deblur.layer import InverseCausalConv2d
from deblur.ops import ANCHORS, causal_conv2d, inverse_causal_conv2d, log_abs_det
from deblur.ops.dense import dense_matrix

CORNER = {
    "bottom-right": (-1, -1),
    "bottom-left": (-1, 0),
    "top-right": (0, -1),
    "top-left": (0, 0),
}


def _random_layer(channels, kernel_size, mixing, anchor, seed=0):
    """A float64 layer with taps and anchors away from their initial values."""
    torch.manual_seed(seed)
    layer = InverseCausalConv2d(channels, kernel_size, mixing=mixing, anchor=anchor)
    layer = layer.double()
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.05)
        layer.log_anchor.uniform_(-0.3, 0.3)
    return layer


# -- log_abs_det ------------------------------------------------------------------


def _kernel(form, C, kh, kw, anchor, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = {"shared": (kh, kw), "per-channel": (C, kh, kw), "mixing": (C, C, kh, kw)}
    k = 0.2 * torch.randn(shape[form], generator=g, dtype=torch.float64)
    ai, aj = CORNER[anchor]
    if form == "mixing":
        k[:, :, ai, aj] = k[:, :, ai, aj].tril(-1) + torch.diag(
            torch.tensor([1.5, -0.7, 2.0][:C], dtype=torch.float64)
        )
    elif form == "per-channel":
        k[:, ai, aj] = torch.tensor([1.5, -0.7, 2.0][:C], dtype=torch.float64)
    else:
        k[ai, aj] = -0.6
    return k


@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize("form", ["shared", "per-channel", "mixing"])
def test_log_abs_det_matches_dense_slogdet(form, anchor):
    C, H, W = 3, 4, 5
    kernel = _kernel(form, C, 2, 3, anchor)

    logdet = log_abs_det(kernel, H, W, channels=C, anchor=anchor)

    sign, expected = torch.linalg.slogdet(dense_matrix(kernel, C, H, W, anchor))
    assert sign != 0
    torch.testing.assert_close(logdet, expected)


def test_log_abs_det_non_triangular_anchor_block_matches_dense_slogdet():
    # the exact inverse refuses this kernel, the determinant does not need to
    kernel = _kernel("mixing", 3, 2, 2, "bottom-right")
    kernel[0, 2, -1, -1] = 0.9

    logdet = log_abs_det(kernel, 3, 4)

    expected = torch.linalg.slogdet(dense_matrix(kernel, 3, 3, 4)).logabsdet
    torch.testing.assert_close(logdet, expected)


def test_log_abs_det_shared_kernel_counts_every_channel():
    kernel = torch.tensor([[0.3, 0.1], [0.2, 2.0]], dtype=torch.float64)

    one = log_abs_det(kernel, 3, 4)
    three = log_abs_det(kernel, 3, 4, channels=3)

    torch.testing.assert_close(one, 12 * torch.tensor(2.0, dtype=torch.float64).log())
    torch.testing.assert_close(three, 3 * one)


def test_log_abs_det_gradient_flows_to_the_anchor_only():
    kernel = _kernel("per-channel", 2, 3, 3, "top-left").requires_grad_()

    log_abs_det(kernel, 5, 6, anchor="top-left").backward()

    expected = torch.zeros_like(kernel)
    expected[:, 0, 0] = 30 / kernel.detach()[:, 0, 0]
    torch.testing.assert_close(kernel.grad, expected)


def test_log_abs_det_wrong_channel_count_raises():
    kernel = _kernel("per-channel", 2, 3, 3, "bottom-right")
    log_abs_det(kernel, 5, 6, channels=2)

    with pytest.raises(ValueError, match="kernel has 2 channels .* the image has 3"):
        log_abs_det(kernel, 5, 6, channels=3)


def test_log_abs_det_negative_size_raises():
    with pytest.raises(ValueError, match="non-negative, got height=-1"):
        log_abs_det(torch.ones(2, 2), -1, 4)


# -- the layer --------------------------------------------------------------------


@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize("mixing", [True, False], ids=["mixing", "per-channel"])
def test_layer_reverse_undoes_forward(mixing, anchor):
    layer = _random_layer(3, (2, 3), mixing, anchor)
    y = torch.randn(2, 3, 9, 11, dtype=torch.float64)

    x, _ = layer(y)

    torch.testing.assert_close(layer.reverse(x), y)
    torch.testing.assert_close(layer(layer.reverse(y))[0], y)


@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize("mixing", [True, False], ids=["mixing", "per-channel"])
def test_layer_logdet_matches_dense_slogdet_of_the_inverse(mixing, anchor):
    C, H, W = 2, 3, 4
    layer = _random_layer(C, (2, 2), mixing, anchor)
    y = torch.randn(5, C, H, W, dtype=torch.float64)

    x, logdet = layer(y)

    matrix = dense_matrix(layer.kernel.detach(), C, H, W, anchor)
    expected = torch.linalg.slogdet(torch.linalg.inv(matrix)).logabsdet
    assert logdet.shape == (5,)
    torch.testing.assert_close(logdet, expected.expand(5))
    # x is the inverse map applied to y, so the dense inverse gives it too
    dense_x = (torch.linalg.inv(matrix) @ y.reshape(5, -1).T).T.reshape(y.shape)
    torch.testing.assert_close(x, dense_x)


@pytest.mark.parametrize("mixing", [True, False], ids=["mixing", "per-channel"])
def test_layer_equals_function(mixing):
    layer = _random_layer(3, (3, 2), mixing, "bottom-left")
    y = torch.randn(1, 3, 7, 8, dtype=torch.float64)
    kernel = layer.kernel.detach()

    x, logdet = layer(y)

    torch.testing.assert_close(x, inverse_causal_conv2d(y, kernel, "bottom-left"))
    torch.testing.assert_close(
        layer.reverse(x), causal_conv2d(x, kernel, "bottom-left")
    )
    torch.testing.assert_close(logdet[0], -log_abs_det(kernel, 7, 8, 3, "bottom-left"))


def test_layer_kernel_is_causal_in_the_channels_and_starts_near_identity():
    layer = InverseCausalConv2d(4, kernel_size=3)

    block = layer.kernel.detach()[:, :, -1, -1]

    assert torch.equal(block.triu(1), torch.zeros(4, 4))
    assert torch.equal(block.diagonal(), torch.ones(4))
    off = layer.kernel.detach().clone()
    off[:, :, -1, -1] -= torch.eye(4)
    assert 0 < off.abs().max() < 0.1
    assert layer.mask.shape == (4, 4, 3, 3)


def test_layer_gradients_flow_to_every_parameter_and_the_input():
    layer = _random_layer(3, (2, 2), True, "bottom-right")
    y = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)

    x, logdet = layer(y)
    (0.5 * (x**2).sum() - logdet.sum()).backward()

    assert y.grad is not None and torch.isfinite(y.grad).all()
    assert layer.log_anchor.grad.abs().min() > 0
    masked = layer.weight.grad * (1 - layer.mask)
    assert torch.equal(masked, torch.zeros_like(masked))
    assert (layer.weight.grad * layer.mask).abs().max() > 0


def test_layer_gradcheck_in_its_parameters():
    layer = _random_layer(2, (2, 2), True, "top-right")
    y = torch.randn(1, 2, 4, 3, dtype=torch.float64)

    def f(weight, log_anchor):
        params = {"weight": weight, "log_anchor": log_anchor}
        x, logdet = torch.func.functional_call(layer, params, (y,))
        return x, logdet

    assert torch.autograd.gradcheck(
        f,
        (
            layer.weight.detach().clone().requires_grad_(),
            layer.log_anchor.detach().clone().requires_grad_(),
        ),
    )


def test_layer_float32_input_keeps_its_dtype():
    layer = InverseCausalConv2d(2, (2, 2), mixing=False)

    x, logdet = layer(torch.rand(3, 2, 5, 5))

    assert x.dtype == torch.float32 and logdet.dtype == torch.float32


def test_layer_repr_names_its_settings():
    text = repr(InverseCausalConv2d(3, (2, 3), mixing=False, anchor="top-left"))

    assert "3, kernel_size=(2, 3), mixing=False, anchor='top-left'" in text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(channels=0), "channels must be at least 1, got 0"),
        (
            dict(channels=2, kernel_size=(0, 3)),
            r"kernel_size must be positive, got \(0, 3\)",
        ),
        (dict(channels=2, anchor="center"), "--method wiener"),
    ],
)
def test_layer_bad_settings_raise(kwargs, message):
    InverseCausalConv2d(2, (1, 3))

    with pytest.raises(ValueError, match=message):
        InverseCausalConv2d(**kwargs)
