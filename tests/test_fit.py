"""``deblur.fit`` (least squares, descent through the inverse) and ``deblur fit-kernel``."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from deblur.cli import app
from deblur.fit import (
    FitError,
    FitResult,
    ImagePair,
    _border_correction,
    _windows,
    fit_kernel,
    lstsq_kernel,
    split_holdout,
)
from deblur.kernel import Kernel, load_kernel, make_kernel, save_kernel, stability
from deblur.ops import causal_conv2d

runner = CliRunner()

# a few steps on small crops: each fit below takes well under a second
FAST = dict(num_steps=20, crop=32, batch=8)


def _texture(h, w, channels=1, seed=0):
    """A photo-like ``(h, w[, C])`` image in [0, 1]: noise smoothed at three scales."""
    rng = np.random.default_rng(seed)
    x = sum(
        s * gaussian_filter(rng.random((h, w, channels)), (s, s, 0))
        for s in (0.7, 2, 5)
    )
    x = (x - x.min()) / (x.max() - x.min())
    return x[..., 0] if channels == 1 else x


def _blur(x, weights, anchor="bottom-right"):
    image = torch.from_numpy(x if x.ndim == 3 else x[..., None]).permute(2, 0, 1)[None]
    y = (
        causal_conv2d(image, torch.from_numpy(weights), anchor)[0]
        .permute(1, 2, 0)
        .numpy()
    )
    return y if x.ndim == 3 else y[..., 0]


def _pairs(weights, n=4, size=48, channels=1, anchor="bottom-right", noise=0.0, seed=0):
    rng = np.random.default_rng(seed + 100)
    pairs = []
    for i in range(n):
        x = _texture(size, size, channels, seed + i)
        y = _blur(x, weights, anchor)
        if noise:
            x = np.rint(x * 255) / 255
            y = np.rint(np.clip(y + rng.normal(0, noise, y.shape), 0, 1) * 255) / 255
        pairs.append(ImagePair(y, x, f"img{i}"))
    return pairs


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _random_stable(kh, kw, seed=0):
    """Random taps with a dominant anchor (sufficient for stability), summing to one."""
    w = np.random.default_rng(seed).uniform(-0.3, 1.0, (kh, kw))
    w[-1, -1] = 1.2 * np.abs(w).sum()
    return w / w.sum()


# --- least squares ----------------------------------------------------------


def test_lstsq_kernel_noise_free_corner_gaussian_exact():
    k = make_kernel("corner-gaussian", 5, sigma=1.4).weights
    fitted = lstsq_kernel(_pairs(k), 5)
    assert fitted.shape == (5, 5)
    assert _rel(fitted, k) < 1e-9


def test_lstsq_kernel_random_stable_non_square_exact():
    k = _random_stable(3, 6, seed=1)
    fitted = lstsq_kernel(_pairs(k, n=2), (3, 6), margin=0)
    assert _rel(fitted, k) < 1e-9


def test_lstsq_kernel_top_left_anchor_recovers_flipped_kernel():
    kernel = make_kernel("diagonal", 4, anchor="top-left")
    assert kernel.weights[0, 0] == kernel.weights.max()
    pairs = _pairs(kernel.weights, n=2, anchor="top-left")
    assert _rel(lstsq_kernel(pairs, 4, anchor="top-left"), kernel.weights) < 1e-9


def test_lstsq_kernel_margin_too_large_raises():
    k = make_kernel("diagonal", 3).weights
    with pytest.raises(ValueError, match="no pixel is left for the fit"):
        lstsq_kernel(_pairs(k, n=1, size=16), 3, margin=16)


def test_lstsq_kernel_flat_images_warn_minimum_norm():
    flat = np.full((20, 20), 0.5)
    with pytest.warns(UserWarning, match="determine only 1 of the 9 taps"):
        fitted = lstsq_kernel([(flat, flat)], 3)
    assert np.isclose(fitted.sum(), 1.0)


def test_lstsq_kernel_shape_mismatch_raises():
    a, b = np.zeros((20, 21)), np.zeros((20, 20))
    with pytest.raises(
        FitError, match=r"img: blurred image is 21x20x1 .* sharp image is 20x20x1"
    ):
        lstsq_kernel([ImagePair(a, b, "img")], 3)


def test_lstsq_kernel_empty_pairs_raises():
    with pytest.raises(ValueError, match="pairs is empty"):
        lstsq_kernel([], 3)


# --- the descent --------------------------------------------------------------


def test_fit_kernel_noise_free_5x5_recovers_kernel():
    k = make_kernel("corner-gaussian", 5, sigma=1.4).weights
    result = fit_kernel(_pairs(k), 5, **FAST)
    assert isinstance(result, FitResult)
    assert _rel(result.kernel, k) < 1e-3
    assert _rel(result.kernel_lstsq, k) < 1e-9
    assert len(result.losses) == FAST["num_steps"]
    assert result.stability.verdict == "stable"
    assert [s.name for s in result.train] == ["img0", "img1", "img2", "img3"]
    for s in result.train:
        assert s.psnr_refined > 100 > 40 > s.psnr_blurred


def test_fit_kernel_identity_init_noise_free_converges():
    k = make_kernel("corner-gaussian", 5, sigma=1.4).weights
    result = fit_kernel(_pairs(k), 5, init="identity", num_steps=60, crop=32, batch=8)
    assert _rel(result.kernel, k) < 1e-3
    assert result.losses[-1] < 1e-6 * result.losses[0]


def test_fit_kernel_noisy_8bit_refined_restores_holdout_at_least_as_well():
    k = make_kernel("corner-gaussian", 5, sigma=1.4).weights
    pairs = _pairs(k, n=6, size=64, noise=0.005)
    result = fit_kernel(pairs[:4], 5, holdout=pairs[4:], num_steps=40, crop=48, batch=8)
    assert [s.name for s in result.holdout] == ["img4", "img5"]
    lstsq = np.mean([s.psnr_lstsq for s in result.holdout])
    refined = np.mean([s.psnr_refined for s in result.holdout])
    assert refined >= lstsq
    # the refined kernel trades a little bias for a smaller noise gain
    assert result.stability.gain < result.stability_lstsq.gain


def test_fit_kernel_same_seed_same_kernel():
    k = make_kernel("corner-gaussian", 5, sigma=1.4).weights
    pairs = _pairs(k, noise=0.005)
    first = fit_kernel(pairs, 5, seed=3, **FAST)
    again = fit_kernel(pairs, 5, seed=3, **FAST)
    other = fit_kernel(pairs, 5, seed=4, **FAST)
    np.testing.assert_array_equal(first.kernel, again.kernel)
    assert first.losses == again.losses
    assert not np.array_equal(first.kernel, other.kernel)


def test_fit_kernel_per_channel_recovers_three_kernels():
    k = make_kernel("per-channel", 5).weights
    result = fit_kernel(_pairs(k, n=3, channels=3), 5, per_channel=True, **FAST)
    assert result.kernel.shape == (3, 5, 5)
    for c in range(3):
        assert _rel(result.kernel[c], k[c]) < 1e-3


def test_fit_kernel_shared_kernel_on_gray_and_colour_pairs():
    k = make_kernel("diagonal", 3).weights
    pairs = _pairs(k, n=1) + _pairs(k, n=1, channels=3, seed=5)
    result = fit_kernel(pairs, 3, **FAST)
    assert result.kernel.shape == (3, 3)
    assert _rel(result.kernel, k) < 1e-3


def test_fit_kernel_bottom_left_anchor_recovers_kernel():
    kernel = make_kernel("corner-gaussian", (3, 5), sigma=1.2, anchor="bottom-left")
    pairs = _pairs(kernel.weights, anchor="bottom-left")
    result = fit_kernel(
        pairs,
        (3, 5),
        anchor="bottom-left",
        init="identity",
        num_steps=60,
        crop=32,
        batch=8,
    )
    assert result.anchor == "bottom-left"
    assert _rel(result.kernel, kernel.weights) < 1e-3


def test_fit_kernel_huge_adam_steps_rejected_kernel_stays_stable():
    k = make_kernel("corner-gaussian", 5, sigma=1.4).weights
    result = fit_kernel(
        _pairs(k),
        5,
        init="identity",
        optimizer="adam",
        lr=2.0,
        num_steps=30,
        crop=32,
        batch=8,
        check_every=1,
    )
    assert result.rejected_steps >= 1
    assert result.final_lr == 2.0 * 0.5**result.rejected_steps
    assert result.stability.stable
    assert stability(Kernel(result.kernel)).stable


def test_fit_kernel_zero_steps_keeps_lstsq():
    k = make_kernel("diagonal", 3).weights
    result = fit_kernel(_pairs(k, noise=0.005), 3, num_steps=0)
    np.testing.assert_array_equal(result.kernel, result.kernel_lstsq)
    assert result.losses == []


def test_fit_kernel_callback_sees_every_step():
    k = make_kernel("diagonal", 3).weights
    seen = []
    fit_kernel(_pairs(k, noise=0.005), 3, callback=lambda *a: seen.append(a), **FAST)
    assert [s for s, _, _ in seen] == list(range(1, FAST["num_steps"] + 1))
    step, loss, psnr = seen[-1]
    assert np.isclose(psnr, 10 * np.log10(1 / loss))


def test_fit_kernel_threads_restored_afterwards():
    import numba

    before = torch.get_num_threads(), numba.get_num_threads()
    k = make_kernel("diagonal", 3).weights
    fit_kernel(_pairs(k, n=1), 3, threads=1, num_steps=2, crop=32)
    assert (torch.get_num_threads(), numba.get_num_threads()) == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(init="zeros"), "init must be one of lstsq, identity"),
        (dict(optimizer="sgd"), "optimizer must be one of lbfgs, adam"),
        (dict(border="mirror"), "border must be one of sharp, zero"),
        (dict(lr=-1.0), "lr must be a positive number"),
        (dict(batch=0), "batch, check_every, resample_every >= 1"),
        (dict(anchor="center"), "a centred kernel is not causal"),
        (dict(crop=3), r"crops of 3x3 leave nothing outside the margin of 3 rows"),
        (
            dict(per_channel=True),
            r"per_channel needs pairs with one channel count, got \[1, 3\]",
        ),
    ],
)
def test_fit_kernel_bad_options_raise(options, message):
    k = make_kernel("diagonal", 3).weights
    pairs = _pairs(k, n=1) + _pairs(k, n=1, channels=3)
    with pytest.raises(ValueError, match=message):
        fit_kernel(pairs, 3, **options)


def test_windows_hold_only_the_sharp_pixels_above_and_left_of_each_crop():
    image = torch.arange(1.0, 1 + 2 * 6 * 7, dtype=torch.float64).reshape(2, 6, 7)
    windows = _windows([image], [(0, 1, 2), (0, 0, 0)], 3, 4, (3, 2), per_channel=True)
    assert windows.shape == (2, 2, 3 + 2, 4 + 1)
    padded = F.pad(image, (1, 0, 2, 0))
    expected = padded[:, 1 : 1 + 5, 2 : 2 + 5].clone()
    expected[:, 2:, 1:] = 0.0
    torch.testing.assert_close(windows[0], expected)
    assert windows[1, :, :2].abs().sum() == 0 and windows[1, :, :, :1].abs().sum() == 0


def test_border_correction_equals_blur_of_the_outside_pixels():
    kernel = torch.rand(2, 3, 4, dtype=torch.float64)
    windows = torch.rand(5, 2, 10 + 2, 9 + 3, dtype=torch.float64)
    windows[..., 2:, 3:] = 0.0
    full = F.conv2d(windows, kernel.unsqueeze(1), groups=2)
    torch.testing.assert_close(_border_correction(windows, kernel), full)


def test_split_holdout_count_and_fraction():
    pairs = list(range(8))
    train, held = split_holdout(pairs, 2, seed=0)
    assert len(held) == 2 and sorted(train + held) == pairs
    assert split_holdout(pairs, 2, seed=0) == (train, held)
    assert len(split_holdout(pairs, 0.25)[1]) == 2
    assert split_holdout(pairs, 0) == (pairs, [])


def test_split_holdout_all_pairs_raises():
    with pytest.raises(ValueError, match="leaves 0 of 3 pairs for training"):
        split_holdout([1, 2, 3], 3)


# --- the command line ---------------------------------------------------------


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _write_pairs(root: Path, weights, n=3, size=40, channels=1, names=None):
    """Sharp 8-bit PNGs and their noise-free blur as float32 TIFF."""
    names = names or [f"p{i}" for i in range(n)]
    for i, name in enumerate(names):
        x = np.rint(_texture(size, size, channels, i) * 255) / 255
        for side in ("sharp", "blurred"):
            (root / side / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x * 255).astype(np.uint8)).save(root / "sharp" / f"{name}.png")
        photometric = "rgb" if channels == 3 else "minisblack"
        tifffile.imwrite(
            root / "blurred" / f"{name}.tif",
            _blur(x, weights).astype(np.float32),
            photometric=photometric,
        )
    return root / "blurred", root / "sharp"


CLI_FAST = ("--num-steps", "10", "--crop", "32", "--batch", "4")


def test_cli_fit_kernel_end_to_end_restore_accepts_kernel(tmp_path):
    true = make_kernel("corner-gaussian", 5, sigma=1.4).weights
    blurred, sharp = _write_pairs(
        tmp_path, true, n=4, names=["a/p0", "a/p1", "p2", "p3"]
    )
    out, report, plot = tmp_path / "k.npy", tmp_path / "fit.json", tmp_path / "fit.png"
    result = run(
        "fit-kernel",
        blurred,
        sharp,
        "--size",
        "5",
        "-o",
        out,
        "--holdout",
        "1",
        "--report",
        report,
        "--plot",
        plot,
        *CLI_FAST,
    )
    assert result.exit_code == 0, result.output
    assert "PSNR refined" in result.output and "held-out" in result.output
    kernel = load_kernel(out)
    assert kernel.anchor == "bottom-right"
    assert _rel(kernel.weights, true) < 1e-3
    meta = json.loads(Path(f"{out}.json").read_text())
    assert meta["verdict"] == "stable" and meta["gain"] > 1
    assert meta["fit"]["num_steps"] == 10 and meta["pairs"] == {
        "train": 3,
        "holdout": 1,
    }
    doc = json.loads(report.read_text())
    assert [r["set"] for r in doc["results"]].count("holdout") == 1
    assert all(r["psnr_after"] > 60 > r["psnr_before"] for r in doc["results"])
    assert doc["kernel"]["anchor"] == "bottom-right" and len(doc["losses"]) == 10
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    restored = run(
        "restore",
        blurred,
        "--kernel",
        out,
        "--reference",
        sharp,
        "--out",
        tmp_path / "restored",
    )
    assert restored.exit_code == 0, restored.output
    assert (tmp_path / "restored" / "a" / "p0.tif").exists()


def test_cli_fit_kernel_per_channel_csv_report(tmp_path):
    true = make_kernel("per-channel", 3).weights
    blurred, sharp = _write_pairs(tmp_path, true, n=2, channels=3)
    out, report = tmp_path / "k.npy", tmp_path / "fit.csv"
    result = run(
        "fit-kernel",
        blurred,
        sharp,
        "--size",
        "3",
        "--per-channel",
        "-o",
        out,
        "--report",
        report,
        "-q",
        *CLI_FAST,
    )
    assert result.exit_code == 0, result.output
    assert "PSNR" not in result.output  # --quiet
    assert np.load(out).shape == (3, 3, 3)
    header = report.read_text().splitlines()[0].split(",")
    assert {
        "input",
        "reference",
        "set",
        "psnr_before",
        "psnr_lstsq",
        "psnr_after",
    } <= set(header)


def test_cli_fit_kernel_unmatched_pairs_exit_2(tmp_path):
    k = make_kernel("diagonal", 3).weights
    blurred, sharp = _write_pairs(tmp_path, k, n=2)
    (sharp / "p1.png").unlink()
    result = run("fit-kernel", blurred, sharp, "--size", "3", "-o", tmp_path / "k.npy")
    assert result.exit_code == 2
    assert "have no sharp partner" in result.output and "p1" in result.output
    assert not (tmp_path / "k.npy").exists()


def test_cli_fit_kernel_size_mismatch_exit_2(tmp_path):
    k = make_kernel("diagonal", 3).weights
    blurred, sharp = _write_pairs(tmp_path, k, n=1)
    Image.fromarray(np.zeros((40, 39), np.uint8)).save(sharp / "p0.png")
    result = run("fit-kernel", blurred, sharp, "--size", "3", "-o", tmp_path / "k.npy")
    assert result.exit_code == 2
    assert "is 40x40x1 (W x H x C) but its sharp partner" in result.output
    assert "39x40x1" in result.output


def test_cli_fit_kernel_existing_output_needs_overwrite(tmp_path):
    k = make_kernel("diagonal", 3).weights
    blurred, sharp = _write_pairs(tmp_path, k, n=1)
    out = tmp_path / "k.npy"
    save_kernel(out, make_kernel("diagonal", 3))
    result = run("fit-kernel", blurred, sharp, "--size", "3", "-o", out, *CLI_FAST)
    assert result.exit_code == 2 and "exists; pass --overwrite" in result.output
    again = run(
        "fit-kernel", blurred, sharp, "--size", "3", "-o", out, "--overwrite", *CLI_FAST
    )
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--size", "5y"), "give a positive size such as 5 or 5x7"),
        (("--size", "0x3"), "give a positive size such as 5 or 5x7"),
        (("--size", "3", "--holdout", "1.5"), "a number of pairs (2) or a fraction"),
        (("--size", "3", "--holdout", "1"), "leaves 0 of 1 pairs for training"),
        (("--size", "3", "--anchor", "center"), "a centred kernel is not causal"),
        (("--size", "3", "--init", "zeros"), "--init must be one of lstsq, identity"),
        (("--size", "3", "-o", "k.png"), "kernel files are .npy, .txt, .csv"),
        (("--size", "3", "--report", "r.txt"), "use .json or .csv"),
        (("--size", "3", "--per-channel", "-o", "k.txt"), "cannot be written as text"),
    ],
)
def test_cli_fit_kernel_bad_usage_exit_2(tmp_path, monkeypatch, args, message):
    k = make_kernel("diagonal", 3).weights
    blurred, sharp = _write_pairs(tmp_path, k, n=1)
    monkeypatch.chdir(tmp_path)
    result = run("fit-kernel", blurred, sharp, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_installed_deblur_fit_kernel_runs_in_a_subprocess(tmp_path):
    exe = shutil.which("deblur", path=str(Path(sys.executable).parent)) or shutil.which(
        "deblur"
    )
    if exe is None:
        pytest.skip("the deblur console script is not installed in this environment")
    true = make_kernel("diagonal", 3).weights
    blurred, sharp = _write_pairs(tmp_path, true, n=2)
    out = tmp_path / "k.npy"
    proc = subprocess.run(
        [
            exe,
            "fit-kernel",
            str(blurred),
            str(sharp),
            "--size",
            "3",
            "-o",
            str(out),
            *CLI_FAST,
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "PSNR refined" in proc.stdout and "Traceback" not in proc.stderr
    assert _rel(np.load(out), true) < 1e-3


# --- the calibration set ------------------------------------------------------

CALIBRATION = Path(__file__).resolve().parents[1] / "sample_images" / "calibration"


def test_calibration_sharp_crops_match_their_recipe():
    import importlib.util

    spec = importlib.util.spec_from_file_location("crops", CALIBRATION / "crops.py")
    crops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(crops)
    assert len(crops.CROPS) == 6
    for name, (load, top, left, _) in crops.CROPS.items():
        stored = np.asarray(Image.open(CALIBRATION / "sharp" / f"{name}.png"))
        expected = load()[top : top + crops.SIZE, left : left + crops.SIZE]
        np.testing.assert_array_equal(stored, expected)


def test_calibration_true_kernel_is_a_stable_corner_gaussian():
    kernel = load_kernel(CALIBRATION / "true_kernel.npy")
    np.testing.assert_array_equal(
        kernel.weights, make_kernel("corner-gaussian", 5, sigma=1.2).weights
    )
    assert kernel.anchor == "bottom-right"
    assert stability(kernel).verdict == "stable"
