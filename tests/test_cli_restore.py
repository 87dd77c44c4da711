"""``deblur restore``, ``blur`` and ``kernel`` through typer's CliRunner and a real subprocess."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from deblur.cli import app
from deblur.imageio import read_image

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _blurred_set(
    tmp_path, make_png, kernel, bit_depth="8", names=("a.png", "sub/b.png")
):
    for i, n in enumerate(names):
        make_png(f"sharp/{n}", seed=i)
    result = run(
        "blur",
        tmp_path / "sharp",
        "--kernel",
        kernel,
        "--bit-depth",
        bit_depth,
        "--out",
        tmp_path / "blurred",
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "blurred", tmp_path / "sharp"


def test_restore_folder_with_reference_scores_and_mirrors_layout(
    tmp_path, make_png, kernel_file
):
    k = kernel_file("diagonal", 3)
    blurred, sharp = _blurred_set(tmp_path, make_png, k, "16")
    report = tmp_path / "report.json"
    result = run(
        "restore",
        blurred,
        "--kernel",
        k,
        "--reference",
        sharp,
        "--out",
        tmp_path / "out",
        "--report",
        report,
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "sub" / "b.png").exists()
    doc = json.loads(report.read_text())
    assert (
        doc["kernel"]["shape"] == [3, 3] and doc["kernel"]["anchor"] == "bottom-right"
    )
    assert doc["kernel"]["gain"] > 1
    rows = {Path(r["input"]).name: r for r in doc["results"]}
    for r in rows.values():
        assert r["error"] is None
        assert r["psnr_after"] > 80 > r["psnr_before"]
        assert r["data_range"] == 65535
        for key in (
            "output",
            "reference",
            "ssim_before",
            "ssim_after",
            "clipped",
            "seconds",
        ):
            assert key in r
    out = read_image(tmp_path / "out" / "a.png")
    assert out.dtype == np.uint16 and out.data.shape == (24, 31, 3)


def test_restore_8bit_input_keeps_depth_and_beats_blurred(
    tmp_path, make_png, kernel_file
):
    k = kernel_file("diagonal", 5)
    blurred, sharp = _blurred_set(tmp_path, make_png, k, "8", names=("a.png",))
    report = tmp_path / "r.csv"
    result = run(
        "restore",
        blurred / "a.png",
        "-k",
        k,
        "-r",
        sharp / "a.png",
        "-o",
        tmp_path / "out",
        "--report",
        report,
    )
    assert result.exit_code == 0, result.output
    assert np.asarray(Image.open(tmp_path / "out" / "a.png")).dtype == np.uint8
    header, row = report.read_text().splitlines()[:2]
    assert header.startswith("input,output,reference")
    assert "PSNR" in result.output


def test_restore_unstable_kernel_exits_2_naming_the_gain(tmp_path, make_png):
    img = make_png("a.png")
    k = tmp_path / "centred.npy"
    g = np.exp(-((np.arange(5) - 2) ** 2) / 2.0)
    np.save(k, np.outer(g, g) / np.outer(g, g).sum())
    result = run("restore", img, "--kernel", k, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "noise gain" in result.output and "unstable" in result.output
    assert "--method wiener" in result.output
    assert not (tmp_path / "out").exists()


def test_restore_unstable_kernel_forced_reports_non_finite_and_writes_nothing(
    tmp_path, make_png
):
    img = make_png("a.png", h=64, w=64)
    k = tmp_path / "tiny_anchor.npy"
    np.save(k, np.array([[1.0, 1.0], [1.0, 1e-3]]))
    result = run("restore", img, "--kernel", k, "--out", tmp_path / "out", "--force")
    assert result.exit_code == 1
    assert "non-finite" in result.output
    assert not (tmp_path / "out" / "a.png").exists()


def test_restore_existing_output_refused_unless_overwrite(
    tmp_path, make_png, kernel_file
):
    img = make_png("a.png")
    k = kernel_file()
    assert run("restore", img, "-k", k, "-o", tmp_path / "out").exit_code == 0
    again = run("restore", img, "-k", k, "-o", tmp_path / "out")
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert (
        run("restore", img, "-k", k, "-o", tmp_path / "out", "--overwrite").exit_code
        == 0
    )


def test_restore_into_input_folder_never_overwrites_input(
    tmp_path, make_png, kernel_file
):
    img = make_png("a.png")
    before = img.read_bytes()
    result = run("restore", img, "-k", kernel_file(), "-o", tmp_path, "--overwrite")
    assert result.exit_code == 1 and "overwrite its input" in result.output
    assert img.read_bytes() == before


def test_restore_bad_file_fails_alone_rest_done(tmp_path, make_png, kernel_file):
    make_png("in/good.png")
    (tmp_path / "in" / "bad.png").write_text("not an image")
    result = run(
        "restore", tmp_path / "in", "-k", kernel_file(), "-o", tmp_path / "out"
    )
    assert result.exit_code == 1
    assert (tmp_path / "out" / "good.png").exists()
    assert not (tmp_path / "out" / "bad.png").exists()
    assert "bad.png" in result.output


def test_restore_per_channel_kernel_on_gray_image_fails_that_file(
    tmp_path, make_png, kernel_file
):
    make_png("in/gray.png", channels=1)
    make_png("in/rgb.png", channels=3)
    k = kernel_file("per-channel", 3)
    result = run("restore", tmp_path / "in", "-k", k, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "the kernel has 3 channels" in result.output
    assert (tmp_path / "out" / "rgb.png").exists()


@pytest.mark.parametrize(
    "args, match",
    [
        (["restore", "missing.png", "-k", "K"], "no such file or folder"),
        (["restore", "IMG", "-k", "missing.npy"], "kernel file not found"),
        (["restore", "IMG", "-k", "K", "--method", "magic"], "--method must be one of"),
        (["restore", "IMG", "-k", "K", "--anchor", "middle"], "anchor must be one of"),
        (["restore", "IMG", "-k", "K", "--device", "cuda"], "--device cpu"),
    ],
)
def test_restore_usage_errors_exit_2(tmp_path, make_png, kernel_file, args, match):
    if "cuda" in args and __import__("torch").cuda.is_available():
        pytest.skip("a CUDA device is present, so --device cuda is valid")
    img, k = make_png("a.png"), kernel_file()
    args = [str(img) if a == "IMG" else str(k) if a == "K" else a for a in args]
    os.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert match in result.output


def test_restore_out_is_a_file_exits_2(tmp_path, make_png, kernel_file):
    (tmp_path / "out").write_text("x")
    result = run(
        "restore", make_png("a.png"), "-k", kernel_file(), "-o", tmp_path / "out"
    )
    assert result.exit_code == 2 and "is a file" in result.output


def test_kernel_show_prints_gain_and_verdict(kernel_file):
    result = run("kernel", "show", kernel_file("diagonal", 5, ratio=0.6))
    assert result.exit_code == 0
    assert "2.697" in result.output and "stable" in result.output


def test_kernel_make_writes_kernel_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "k.npy"
    assert (
        run("kernel", "make", "corner-gaussian", "--size", "5x3", "-o", path).exit_code
        == 0
    )
    assert np.load(path).shape == (5, 3)
    again = run("kernel", "make", "diagonal", "-o", path)
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_installed_deblur_command_restores_in_a_subprocess(
    tmp_path, make_png, kernel_file
):
    exe = shutil.which("deblur", path=str(Path(sys.executable).parent)) or shutil.which(
        "deblur"
    )
    if exe is None:
        pytest.skip("the deblur console script is not installed in this environment")
    img, k = make_png("a.png"), kernel_file()
    proc = subprocess.run(
        [exe, "restore", str(img), "--kernel", str(k), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "a.png").exists()
    assert "a.png" in proc.stdout


def test_outputs_never_replace_the_kernel_or_inputs(tmp_path, make_png, kernel_file):
    img, k = make_png("a.png"), kernel_file()
    before = k.read_bytes()
    r = run("restore", img, "-k", k, "-o", tmp_path / "o", "--report", str(k) + ".json")
    assert r.exit_code == 2 and "would replace" in r.output
    r = run("kernel", "show", k, "--plot", tmp_path / "p.png")
    assert r.exit_code == 0
    r = run("kernel", "show", k, "--plot", tmp_path / "p.png")
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = run("compare", img, "-k", k, "-r", img, "-o", tmp_path, "--overwrite")
    assert r.exit_code == 1 and "would replace an input" in r.output
    assert k.read_bytes() == before
    assert Image.open(img).size == (31, 24)


def test_restore_stdout_closed_is_not_an_error(tmp_path, make_png, kernel_file):
    exe = shutil.which("deblur", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the deblur console script is not installed in this environment")
    img, k = make_png("a.png"), kernel_file()
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [exe, "restore", str(img), "-k", str(k), "-o", str(tmp_path / "o")],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=300,
        )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert (tmp_path / "o" / "a.png").exists()


@pytest.mark.parametrize("args", [["kernel", "show", "K"], ["--help"]])
def test_commands_with_full_stdout_exit_0_without_traceback(kernel_file, args):
    exe = shutil.which("deblur", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the deblur console script is not installed in this environment")
    k = kernel_file()
    argv = [exe] + [str(k) if a == "K" else a for a in args]
    with open("/dev/full", "w") as full:
        proc = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
