"""Tests of the scikit-image baselines: the convention, the defaults, robustness."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from deblur import causal_conv2d, inverse_causal_conv2d
from deblur.baselines import (
    BASELINE_ANCHORS,
    METHODS,
    deconvolve,
    default_balance,
    psf_from_kernel,
    wiener_noise_gain,
)
from deblur.ops.forms import flip_dims

# The largest tap sits away from the anchor in both axes, so the blurred image
# peaks off the impulse and only a correct restoration brings the peak back.
CAUSAL = np.array([[0.45, 0.10, 0.05], [0.05, 0.10, 0.25]])
CENTRED = np.array(
    [
        [0.05, 0.30, 0.05, 0.05, 0.05],
        [0.05, 0.05, 0.20, 0.05, 0.05],
        [0.05, 0.05, 0.05, 0.05, 0.05],
    ]
)


def corner_gaussian(size=5, sigma=1.2, anchor="bottom-right"):
    a = np.arange(size)[::-1]
    k = np.exp(-(a[:, None] ** 2 + a[None, :] ** 2) / (2 * sigma**2))
    k /= k.sum()
    return _to_anchor(k, anchor)


def _to_anchor(kernel, anchor):
    dims = flip_dims(anchor)
    if not dims:
        return kernel
    return np.flip(kernel, axis=tuple(d % 2 for d in dims)).copy()


def blur(image, kernel, anchor="bottom-right"):
    """Blur (H, W, C) by deblur's operator (a centred correlation for center)."""
    if anchor == "center":
        planes = [
            ndi.correlate(image[..., c], kernel, mode="constant")
            for c in range(image.shape[2])
        ]
        return np.stack(planes, axis=-1)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    y = causal_conv2d(x, torch.from_numpy(np.ascontiguousarray(kernel)), anchor)
    return y[0].permute(1, 2, 0).numpy()


def quantise(image, levels=255):
    return np.round(np.clip(image, 0.0, 1.0) * levels) / levels


def psnr(image_true, image_test):
    return peak_signal_noise_ratio(image_true, image_test, data_range=1.0)


@pytest.fixture(scope="module")
def camera128():
    return data.camera()[200:328, 200:328, None].astype(np.float64) / 255


# ---------------------------------------------------------------- the PSF


def test_psf_from_kernel_bottom_right_flips_into_centre():
    psf = psf_from_kernel(np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(psf, [[0, 0, 0], [0, 4, 3], [0, 2, 1]])


@pytest.mark.parametrize("anchor", BASELINE_ANCHORS)
@pytest.mark.parametrize("kernel_size", [(3, 4), (2, 5), (4, 4), (1, 3)])
def test_psf_from_kernel_anchor_tap_at_centre(anchor, kernel_size):
    kh, kw = kernel_size
    kernel = np.arange(1.0, kh * kw + 1).reshape(kh, kw)
    if anchor == "center":
        row, col = kh // 2, kw // 2
    else:
        row = kh - 1 if anchor.startswith("bottom") else 0
        col = kw - 1 if anchor.endswith("right") else 0
    psf = psf_from_kernel(kernel, anchor)
    assert psf.shape[0] % 2 == 1 and psf.shape[1] % 2 == 1
    assert psf[psf.shape[0] // 2, psf.shape[1] // 2] == kernel[row, col]
    assert psf.sum() == kernel.sum()


def test_psf_from_kernel_unknown_anchor_raises():
    with pytest.raises(ValueError, match="anchor must be one of .*got 'middle'"):
        psf_from_kernel(np.ones((3, 3)), "middle")


# ---------------------------------------------------------- the convention


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("anchor", BASELINE_ANCHORS)
def test_deconvolve_impulse_peak_on_its_pixel(method, anchor):
    if anchor == "center":
        kernel = CENTRED / CENTRED.sum()
    else:
        kernel = _to_anchor(CAUSAL, anchor)
    image = np.zeros((21, 24, 1))
    image[10, 11, 0] = 1.0
    blurred = blur(image, kernel, anchor)
    assert np.unravel_index(blurred.argmax(), blurred.shape) != (10, 11, 0)

    restored, _ = deconvolve(blurred, kernel, method, anchor)

    assert np.unravel_index(restored.argmax(), restored.shape) == (10, 11, 0)


@pytest.mark.parametrize("anchor", ["top-left", "bottom-right"])
def test_deconvolve_wiener_smooth_image_psnr_well_above_blurred(anchor):
    yy, xx = np.mgrid[0:61, 0:77] / 60.0
    sharp = (0.5 + 0.4 * np.sin(7 * xx) * np.cos(5 * yy + 3 * xx))[..., None]
    kernel = corner_gaussian(anchor=anchor)
    blurred = quantise(blur(sharp, kernel, anchor), 65535)

    restored, used = deconvolve(blurred, kernel, "wiener", anchor, balance=1e-7)

    assert psnr(sharp, blurred) < 35
    assert psnr(sharp, restored) > psnr(sharp, blurred) + 25
    assert used["balance"] == 1e-7


def test_deconvolve_wiener_equals_exact_inverse_gain_at_zero_balance():
    kernel = np.zeros((5, 5))
    for t in range(5):
        kernel[4 - t, 4 - t] = 0.6**t
    impulse = torch.zeros(1, 1, 96, 96, dtype=torch.float64)
    impulse[0, 0, 0, 0] = 1.0
    response = inverse_causal_conv2d(impulse, torch.from_numpy(kernel))
    exact = float(response.norm())

    gain = wiener_noise_gain(kernel, 0.0, (96, 96))

    assert gain == pytest.approx(exact, rel=1e-6)


# ------------------------------------------------------------- Wiener balance


def test_deconvolve_wiener_default_balance_beats_tiny_and_huge(camera128):
    kernel = corner_gaussian()
    rng = np.random.default_rng(0)
    noisy = blur(camera128, kernel) + rng.normal(0, 0.01, camera128.shape)
    blurred = quantise(noisy)

    default, used = deconvolve(blurred, kernel, "wiener")
    tiny, _ = deconvolve(blurred, kernel, "wiener", balance=1e-7)
    huge, _ = deconvolve(blurred, kernel, "wiener", balance=1.0)

    assert psnr(camera128, default) > psnr(camera128, tiny) + 3
    assert psnr(camera128, default) > psnr(camera128, huge) + 3
    assert psnr(camera128, default) > psnr(camera128, blurred) + 4
    assert 1e-4 < used["balance"] < 1e-2
    assert 0.005 < used["noise_sigma"] < 0.02


def test_default_balance_constant_image_uses_sigma_floor():
    image = np.full((32, 40, 1), 0.5)

    balance, sigma = default_balance(image, np.array([[0.2, 0.8]]))

    assert sigma == pytest.approx(1 / (65535 * np.sqrt(12)))
    assert balance > 0
    assert np.isfinite(deconvolve(image, np.array([[0.2, 0.8]]), "wiener")[0]).all()


def test_default_balance_centred_kernel_caps_noise_gain(camera128):
    a = np.arange(5) - 2
    kernel = np.exp(-(a[:, None] ** 2 + a[None, :] ** 2) / (2 * 1.2**2))
    kernel /= kernel.sum()
    blurred = quantise(blur(camera128, kernel, "center"))

    restored, used = deconvolve(blurred, kernel, "wiener", "center")

    assert used["noise_gain"] == pytest.approx(5.0, rel=0.05)
    assert psnr(camera128, restored) > 20


# ------------------------------------------------------------------ boundary


def test_deconvolve_zero_boundary_best_for_causal_blur(camera128):
    kernel = corner_gaussian()
    blurred = quantise(blur(camera128, kernel))

    scores = {
        (method, boundary): psnr(
            camera128, deconvolve(blurred, kernel, method, boundary=boundary)[0]
        )
        for method in ("wiener", "richardson-lucy")
        for boundary in ("zero", "symmetric", "none")
    }

    for method in ("wiener", "richardson-lucy"):
        zero = scores[method, "zero"]
        assert zero > scores[method, "symmetric"] + 3, scores
        assert zero > scores[method, "none"] + 5, scores
    assert scores["wiener", "zero"] > 40


# ------------------------------------------------------------ Richardson-Lucy


def test_deconvolve_richardson_lucy_all_zero_image_stays_zero():
    restored, _ = deconvolve(
        np.zeros((19, 26, 1)), corner_gaussian(), "richardson-lucy"
    )

    assert np.isfinite(restored).all()
    assert np.abs(restored).max() == 0.0


def test_deconvolve_richardson_lucy_mostly_zero_image_finite_bounded():
    image = np.zeros((19, 26, 1))
    image[4, 6, 0] = 1.0
    image[12, 20, 0] = 0.5
    blurred = blur(image, corner_gaussian())

    restored, _ = deconvolve(blurred, corner_gaussian(), "richardson-lucy")

    assert np.isfinite(restored).all()
    assert restored.min() >= 0.0
    assert restored.max() <= 1.0 + 1e-6
    assert np.unravel_index(restored.argmax(), restored.shape) == (4, 6, 0)


def test_deconvolve_richardson_lucy_dark_image_bright_line_bounded():
    image = np.full((25, 30, 1), 1e-6)
    image[12, :, 0] = 1.0
    blurred = blur(image, corner_gaussian())

    restored, _ = deconvolve(blurred, corner_gaussian(), "richardson-lucy")

    assert np.isfinite(restored).all()
    assert restored.min() >= 0.0
    assert restored.max() < 1.1
    assert restored[12].mean() > 0.9
    assert np.median(np.delete(restored, 12, axis=0)) < 1e-3


def test_deconvolve_richardson_lucy_negative_values_clipped_finite():
    rng = np.random.default_rng(3)
    image = rng.normal(0.0, 0.01, (20, 20, 1))

    restored, _ = deconvolve(image, corner_gaussian(), "richardson-lucy")

    assert np.isfinite(restored).all()
    assert restored.min() >= 0.0


def test_deconvolve_richardson_lucy_unnormalised_kernel_keeps_scale():
    image = np.zeros((15, 17, 1))
    image[7, 8, 0] = 0.5
    kernel = 3.0 * corner_gaussian(3)

    restored, used = deconvolve(blur(image, kernel), kernel, "richardson-lucy")

    assert used["kernel_sum"] == pytest.approx(3.0)
    assert restored.sum() == pytest.approx(0.5, rel=1e-3)


# ----------------------------------------------------------- shapes, params


@pytest.mark.parametrize("method", METHODS)
def test_deconvolve_per_channel_kernels_odd_non_square(method):
    rng = np.random.default_rng(1)
    image = rng.uniform(0.1, 0.9, (17, 23, 3))
    kernels = np.stack(
        [
            corner_gaussian(3, 0.8),
            corner_gaussian(3, 1.5),
            corner_gaussian(5, 1.0)[1:4, 1:4],
        ]
    )
    blurred = np.concatenate(
        [blur(image[..., c : c + 1], kernels[c]) for c in range(3)], axis=-1
    )
    params = {"balance": 1e-3} if method == "wiener" else {}

    restored, _ = deconvolve(blurred, kernels, method, **params)

    assert restored.shape == (17, 23, 3)
    assert restored.dtype == np.float64
    for c in range(3):
        alone, _ = deconvolve(blurred[..., c : c + 1], kernels[c], method, **params)
        np.testing.assert_allclose(restored[..., c], alone[..., 0], atol=1e-12)


def test_deconvolve_2d_image_returns_2d():
    restored, _ = deconvolve(np.full((9, 11), 0.5), np.array([[0.5, 0.5]]), "wiener")

    assert restored.shape == (9, 11)


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("wiener", {"balance", "noise_sigma", "noise_gain", "boundary"}),
        ("unsupervised-wiener", {"seed", "boundary", "num_iter"}),
        ("richardson-lucy", {"num_iter", "boundary", "kernel_sum"}),
    ],
)
def test_deconvolve_used_params_include_defaults(method, expected, camera128):
    _, used = deconvolve(camera128[:40, :40], corner_gaussian(3), method)

    assert set(used) == expected | {"method", "anchor"}
    assert used["method"] == method
    assert used["anchor"] == "bottom-right"
    assert used["boundary"] == "zero"
    if method == "richardson-lucy":
        assert used["num_iter"] == 30
    if method == "unsupervised-wiener":
        assert used["seed"] == 0 and used["num_iter"] >= 30


def test_deconvolve_wiener_given_balance_recorded_without_sigma(camera128):
    _, used = deconvolve(
        camera128[:32, :32], corner_gaussian(3), "wiener", balance=0.01
    )

    assert used["balance"] == 0.01
    assert "noise_sigma" not in used


def test_deconvolve_unsupervised_seed_reproducible(camera128):
    blurred = blur(camera128[:48, :48], corner_gaussian(3))

    first, _ = deconvolve(blurred, corner_gaussian(3), "unsupervised-wiener", seed=5)
    again, _ = deconvolve(blurred, corner_gaussian(3), "unsupervised-wiener", seed=5)
    other, _ = deconvolve(blurred, corner_gaussian(3), "unsupervised-wiener", seed=6)

    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 0


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "inverse"}, ValueError, "method must be one of .*got 'inverse'"),
        ({"anchor": "centre"}, ValueError, "anchor must be one of .*center.*'centre'"),
        ({"boundary": "wrap"}, ValueError, "boundary must be one of zero, symmetric"),
        ({"num_iter": 10}, TypeError, "'wiener' got unexpected parameter.*num_iter"),
        ({"balance": -1.0}, ValueError, "balance must be a finite number >= 0"),
    ],
)
def test_deconvolve_bad_arguments_raise(kwargs, error, match):
    args = {"method": "wiener", **kwargs}
    method = args.pop("method")
    with pytest.raises(error, match=match):
        deconvolve(np.full((8, 8, 1), 0.5), np.ones((2, 2)) / 4, method, **args)


def test_deconvolve_richardson_lucy_bad_num_iter_raises():
    with pytest.raises(ValueError, match="num_iter must be an integer >= 1, got 0"):
        deconvolve(
            np.full((8, 8, 1), 0.5), np.ones((2, 2)), "richardson-lucy", num_iter=0
        )


def test_deconvolve_integer_image_raises():
    with pytest.raises(TypeError, match="got dtype uint8; divide integer data"):
        deconvolve(np.full((8, 8, 1), 128, np.uint8), np.ones((2, 2)), "wiener")


def test_deconvolve_unscaled_float_image_raises():
    with pytest.raises(ValueError, match="values reach 255.*divide 8-bit data by 255"):
        deconvolve(np.full((8, 8, 1), 255.0), np.ones((2, 2)), "wiener")


def test_deconvolve_slightly_above_one_accepted():
    restored, _ = deconvolve(np.full((8, 8, 1), 1.2), np.ones((2, 2)) / 4, "wiener")

    assert restored.shape == (8, 8, 1)


def test_deconvolve_nan_image_raises():
    image = np.full((8, 8, 1), 0.5)
    image[2, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        deconvolve(image, np.ones((2, 2)), "wiener")


def test_deconvolve_kernel_channel_mismatch_raises():
    with pytest.raises(ValueError, match="kernel has 2 channels .* image has 3"):
        deconvolve(np.full((8, 8, 3), 0.5), np.ones((2, 3, 3)), "wiener")


def test_deconvolve_mixing_kernel_not_implemented():
    with pytest.raises(NotImplementedError, match=r"take \(kh, kw\) or \(C, kh, kw\)"):
        deconvolve(np.full((8, 8, 3), 0.5), np.ones((3, 3, 2, 2)), "wiener")


def test_deconvolve_richardson_lucy_negative_kernel_raises():
    kernel = np.array([[-0.2, 1.2]])
    with pytest.raises(
        ValueError, match="non-negative kernel.*-0.2.*use method 'wiener'"
    ):
        deconvolve(np.full((8, 8, 1), 0.5), kernel, "richardson-lucy")
    restored, _ = deconvolve(np.full((8, 8, 1), 0.5), kernel, "wiener")
    assert np.isfinite(restored).all()


def test_deconvolve_richardson_lucy_zero_kernel_raises():
    with pytest.raises(ValueError, match="positive sum, got an all-zero kernel"):
        deconvolve(np.full((8, 8, 1), 0.5), np.zeros((2, 2)), "richardson-lucy")
