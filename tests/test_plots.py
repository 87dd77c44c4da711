"""Tests of the pictures: written, readable, of the announced size, not blank."""

import numpy as np
import pytest
from PIL import Image

from deblur.plots import figure_size, plot_comparison, plot_fit, plot_kernel

KERNEL = np.array([[0.01, 0.02, 0.04], [0.02, 0.08, 0.12], [0.04, 0.12, 0.55]])


def read_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def assert_not_blank(pixels):
    assert pixels.std() > 10
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50


def magenta_pixels(pixels):
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    return np.count_nonzero((r > 200) & (g < 60) & (b > 200))


def assert_no_temp_files(folder, expected):
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)


# ------------------------------------------------------------- plot_kernel


@pytest.mark.parametrize(
    ("kernel", "panels", "rows"),
    [
        (KERNEL, 1, 1),
        (np.stack([KERNEL, KERNEL.T, KERNEL - 0.1]), 3, 1),
        (np.tile(KERNEL, (2, 2, 1, 1)), 4, 2),
    ],
)
def test_plot_kernel_forms_png_of_known_size(tmp_path, kernel, panels, rows):
    path = tmp_path / "kernel.png"

    plot_kernel(kernel, path, gain=8.6)

    pixels = read_png(path)
    width, height = figure_size("kernel", panels, rows)
    assert pixels.shape == (height, width, 3)
    assert_not_blank(pixels)
    assert magenta_pixels(pixels) > 50 * panels
    assert_no_temp_files(tmp_path, ["kernel.png"])


@pytest.mark.parametrize("anchor", ["top-left", "center"])
def test_plot_kernel_other_anchor_and_large_kernel(tmp_path, anchor):
    kernel = np.random.default_rng(0).uniform(0, 1, (11, 13))

    plot_kernel(kernel, tmp_path / "k.png", anchor=anchor, title="learned")

    assert read_png(tmp_path / "k.png").shape == (340, 360, 3)


def test_plot_kernel_existing_file_without_overwrite_raises(tmp_path):
    path = tmp_path / "k.png"
    path.write_bytes(b"old")

    with pytest.raises(FileExistsError, match="already exists"):
        plot_kernel(KERNEL, path, overwrite=False)

    assert path.read_bytes() == b"old"
    plot_kernel(KERNEL, path)
    assert read_png(path).shape == (340, 360, 3)


def test_plot_kernel_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_kernel(KERNEL, tmp_path / "no" / "k.png")


@pytest.mark.parametrize(
    ("kernel", "anchor", "match"),
    [
        (np.ones(4), "bottom-right", r"kernel must be .* got shape \(4,\)"),
        (np.full((2, 2), np.nan), "bottom-right", "NaN or infinite"),
        (KERNEL, "middle", "anchor must be one of .*got 'middle'"),
    ],
)
def test_plot_kernel_bad_input_raises(tmp_path, kernel, anchor, match):
    with pytest.raises(ValueError, match=match):
        plot_kernel(kernel, tmp_path / "k.png", anchor=anchor)
    assert_no_temp_files(tmp_path, [])


# --------------------------------------------------------- plot_comparison


def test_plot_comparison_gray_and_colour_png_of_known_size(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:47, 0:61] / 60.0
    gray = (0.5 + 0.5 * np.sin(9 * xx) * np.cos(7 * yy))[..., None]
    colour = rng.uniform(0, 1, (30, 20, 3))
    panels = [("sharp", gray), ("wiener 31.2 dB", gray[..., 0] ** 2), ("rgb", colour)]

    plot_comparison(panels, tmp_path / "cmp.png")

    pixels = read_png(tmp_path / "cmp.png")
    width, height = figure_size("comparison", 3)
    assert pixels.shape == (height, width, 3)
    assert_not_blank(pixels)
    assert_no_temp_files(tmp_path, ["cmp.png"])


def test_plot_comparison_out_of_range_and_alpha_drawn(tmp_path):
    image = np.linspace(-0.5, 1.5, 40 * 40 * 4).reshape(40, 40, 4)

    plot_comparison([("rgba", image)], tmp_path / "one.png")

    assert read_png(tmp_path / "one.png").shape == (440, 400, 3)


@pytest.mark.parametrize(
    ("panels", "error", "match"),
    [
        ([], ValueError, "panels is empty"),
        ("image", TypeError, "list of .label, image. pairs, got str"),
        (
            [("a", np.zeros((4, 4)), 1)],
            TypeError,
            "panel 0 must be a .label, image. pair",
        ),
        (
            [("a", np.zeros((4, 4, 2)))],
            ValueError,
            r"panel 0 \('a'\).*got shape \(4, 4, 2\)",
        ),
        ([("a", np.zeros((4, 4), np.uint8))], TypeError, "got dtype uint8; divide"),
    ],
)
def test_plot_comparison_bad_panels_raise(tmp_path, panels, error, match):
    with pytest.raises(error, match=match):
        plot_comparison(panels, tmp_path / "cmp.png")


# ----------------------------------------------------------------- plot_fit


@pytest.mark.parametrize(
    "losses",
    [
        list(np.exp(-np.arange(60) / 15) + 1e-3),
        [0.5, 0.0, -0.1],
        [],
    ],
    ids=["log", "non-positive", "empty"],
)
def test_plot_fit_png_of_known_size(tmp_path, losses):
    plot_fit(KERNEL, losses, tmp_path / "fit.png", gain=2.7)

    pixels = read_png(tmp_path / "fit.png")
    width, height = figure_size("fit", 1)
    assert pixels.shape == (height, width, 3)
    assert_not_blank(pixels)


def test_plot_fit_per_channel_kernel_adds_panels(tmp_path):
    kernel = np.stack([KERNEL, KERNEL * 0.5, KERNEL.T])

    plot_fit(kernel, [1.0, 0.5, 0.25], tmp_path / "fit.png", anchor="top-left")

    assert read_png(tmp_path / "fit.png").shape[:2][::-1] == figure_size("fit", 3)


def test_plot_fit_nan_loss_raises(tmp_path):
    with pytest.raises(ValueError, match="losses must be finite, got 1 NaN"):
        plot_fit(KERNEL, [1.0, float("nan")], tmp_path / "fit.png")


def test_plot_fit_mixing_kernel_raises(tmp_path):
    with pytest.raises(
        ValueError, match="draw a channel-mixing kernel with plot_kernel"
    ):
        plot_fit(np.ones((2, 2, 3, 3)), [1.0], tmp_path / "fit.png")


def test_figure_size_unknown_kind_raises():
    with pytest.raises(ValueError, match="kind must be .*got 'loss'"):
        figure_size("loss", 1)
