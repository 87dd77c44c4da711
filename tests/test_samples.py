"""The shipped sample data: blurred photos restore to the PSNR the README promises."""

import numpy as np
import pytest

from deblur.imageio import read_image
from deblur.kernel import load_kernel, make_kernel, stability
from deblur.restore import RestoreOptions, restore_file
from deblur.synth import blur_array

from .conftest import SAMPLES

STABLE = ("diagonal", "corner_gaussian", "per_channel")


@pytest.mark.parametrize("kernel", STABLE)
@pytest.mark.parametrize("depth, floor", [("8bit", 40.0), ("16bit", 80.0)])
def test_sample_photo_restores_above_psnr_floor(tmp_path, kernel, depth, floor):
    k = load_kernel(SAMPLES / "kernels" / f"{kernel}.npy")
    source = SAMPLES / "blurred" / kernel / depth / "chelsea.png"
    record = restore_file(
        source,
        tmp_path / "out.png",
        RestoreOptions(kernel=k),
        SAMPLES / "sharp" / "chelsea.png",
    )
    assert record["error"] is None
    assert record["psnr_after"] >= floor
    assert record["psnr_before"] < 31


def test_sample_kernels_are_stable_except_the_centred_one():
    for name in STABLE:
        assert (
            stability(load_kernel(SAMPLES / "kernels" / f"{name}.npy")).verdict
            == "stable"
        )
    centred = load_kernel(SAMPLES / "kernels" / "centred_gaussian.npy")
    assert centred.anchor == "center"
    assert stability(centred).verdict == "unstable"


def test_sample_blurred_files_match_deblur_blur_exactly():
    # the stored 8-bit blurred photo is exactly what blur_array + rounding gives
    k = load_kernel(SAMPLES / "kernels" / "diagonal.npy")
    sharp = read_image(SAMPLES / "sharp" / "camera.png")
    stored = read_image(SAMPLES / "blurred" / "diagonal" / "8bit" / "camera.png")
    expected = np.rint(np.clip(blur_array(sharp.data, k), 0, 1) * 255) / 255
    np.testing.assert_array_equal(stored.data, expected)


def test_sample_kernel_files_match_kernel_make():
    k = load_kernel(SAMPLES / "kernels" / "corner_gaussian.npy")
    np.testing.assert_array_equal(
        k.weights, make_kernel("corner-gaussian", 5, sigma=1.4).weights
    )
