"""Tests of deblur.metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from deblur.metrics import psnr, ssim, ssim_window


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    true = rng.random((24, 20, 3))
    test = np.clip(true + 0.05 * rng.standard_normal(true.shape), 0, 1)
    return true, test


def test_psnr_constant_error_tenth_is_20db():
    true = np.full((8, 9, 3), 0.4)

    assert psnr(true, true + 0.1, data_range=1.0) == pytest.approx(20.0, abs=1e-9)


def test_psnr_one_level_error_on_8bit_range():
    true = np.zeros((4, 4, 1))

    # 10 * log10(255**2 / 1)
    assert psnr(true, true + 1, data_range=255) == pytest.approx(48.1308036, abs=1e-6)


def test_psnr_scaled_data_range_one_equals_raw_range(pair):
    true, test = pair
    raw_true, raw_test = np.rint(true * 255), np.rint(test * 255)

    assert psnr(raw_true / 255, raw_test / 255, 1.0) == pytest.approx(
        psnr(raw_true, raw_test, 255.0), rel=1e-12
    )


def test_psnr_identical_images_inf(pair):
    true, _ = pair

    assert psnr(true, true.copy(), 1.0) == math.inf


def test_psnr_nan_input_nan(pair):
    true, test = pair
    test = test.copy()
    test[0, 0, 0] = np.nan

    assert math.isnan(psnr(true, test, 1.0))


def test_psnr_gray_2d_equals_one_channel(pair):
    true, test = pair

    assert psnr(true[..., 0], test[..., 0], 1.0) == psnr(
        true[..., :1], test[..., :1], 1.0
    )


def test_ssim_identical_images_one(pair):
    true, _ = pair

    assert ssim(true, true.copy(), 1.0) == pytest.approx(1.0, abs=1e-12)


def test_ssim_constant_images_luminance_term_only():
    true = np.zeros((10, 10, 1))
    test = np.full((10, 10, 1), 0.1)
    c1 = (0.01 * 1.0) ** 2

    # zero variances: only (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) is left
    assert ssim(true, test, 1.0) == pytest.approx(c1 / (0.1**2 + c1), rel=1e-9)


def test_ssim_colour_is_mean_of_channels(pair):
    true, test = pair
    per_channel = [ssim(true[..., c], test[..., c], 1.0) for c in range(3)]

    assert ssim(true, test, 1.0) == pytest.approx(np.mean(per_channel), rel=1e-12)
    assert 0.5 < ssim(true, test, 1.0) < 0.99


def test_ssim_small_image_uses_largest_odd_window(pair):
    true, test = pair
    true, test = true[:6, :, 0], test[:6, :, 0]
    expected = structural_similarity(true, test, win_size=5, data_range=1.0)

    assert ssim_window(6, 20) == 5
    assert ssim(true, test, 1.0) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("shape", [(1, 30, 3), (2, 2, 1), (30, 2, 1)])
def test_ssim_below_three_pixels_nan(shape):
    image = np.linspace(0, 1, math.prod(shape)).reshape(shape)

    assert math.isnan(ssim(image, image, 1.0))


def test_ssim_three_pixels_computed():
    image = np.linspace(0, 1, 3 * 30).reshape(3, 30, 1)

    assert ssim_window(3, 30) == 3
    assert ssim(image, image, 1.0) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("height", "width", "window"),
    [(512, 512, 7), (7, 7, 7), (8, 100, 7), (6, 100, 5), (4, 4, 3), (3, 9, 3)],
)
def test_ssim_window_sizes(height, width, window):
    assert ssim_window(height, width) == window


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_metric_shape_mismatch_names_both_shapes(metric):
    with pytest.raises(ValueError, match=r"\(8, 8, 3\) and \(8, 8, 1\)"):
        metric(np.zeros((8, 8, 3)), np.zeros((8, 8, 1)), 1.0)


@pytest.mark.parametrize("metric", [psnr, ssim])
@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_metric_bad_data_range_raises(metric, bad):
    with pytest.raises(ValueError, match="data_range must be a positive finite"):
        metric(np.zeros((8, 8, 1)), np.ones((8, 8, 1)), bad)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_metric_wrong_ndim_raises(metric):
    with pytest.raises(ValueError, match=r"must be \(H, W, C\) or \(H, W\)"):
        metric(np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 8, 1)), 1.0)
