"""Bad input, faults and interruptions: one clear line, the right exit code, no damage.

Each test is one entry of the catalogue in ``.notes/when-things-go-wrong.md``.
In-process tests go through :func:`deblur.restore.restore_file` or typer's
``CliRunner``; the interruption and concurrency tests run the installed
``deblur`` command in real subprocesses.
"""

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage
from typer.testing import CliRunner

import deblur.restore as restore_mod
from deblur import imageio
from deblur.atomic import is_atomic_temp
from deblur.cli import app
from deblur.imageio import read_image
from deblur.kernel import Kernel, load_kernel, make_kernel, save_kernel, stability
from deblur.metrics import psnr
from deblur.restore import RestoreOptions, restore_file
from deblur.synth import blur_array

from .conftest import _photo

runner = CliRunner()
EXE = Path(sys.executable).with_name("deblur")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def leftovers(folder: Path) -> list[str]:
    """Temporary or hidden files left in ``folder`` (there must be none)."""
    if not folder.exists():
        return []
    return [
        p.name for p in folder.rglob("*") if p.name.startswith(".") or is_atomic_temp(p)
    ]


def identity() -> Kernel:
    return Kernel(np.ones((1, 1)))


@pytest.fixture
def k5(kernel_file):
    return kernel_file("diagonal", 5)


def _save(path: Path, array: np.ndarray, mode: str | None = None, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = PILImage.fromarray(array)
    if mode is not None:
        pil = pil.convert(mode)
    pil.save(path, **options)
    return path


# ----------------------------------------------------------------------------
# paths


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "missing.png", "missing.png: no such file or folder"),
        (lambda p: p / "missing_dir", "missing_dir: no such file or folder"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "folder holds no images"),
        (lambda p: p / "*.tif", "pattern matches no image files"),
    ],
    ids=["missing-file", "missing-folder", "empty-folder", "glob-nothing"],
)
def test_restore_unusable_input_path_exits_2_one_line(tmp_path, k5, make, match):
    result = run("restore", make(tmp_path), "-k", k5, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert len(error_lines(result.stderr)) == 1 and match in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: chmod 000 does not stop root from reading "
    "(the simulated test below covers this case)",
)
def test_restore_unreadable_file_fails_alone(tmp_path, make_png, k5):
    make_png("in/good.png")
    bad = make_png("in/locked.png")
    bad.chmod(0)
    try:
        result = run("restore", tmp_path / "in", "-k", k5, "-o", tmp_path / "out")
    finally:
        bad.chmod(0o644)
    assert result.exit_code == 1
    assert "locked.png: cannot be read" in result.stderr
    assert (tmp_path / "out" / "good.png").exists()


def test_restore_unreadable_file_simulated_fails_alone(
    tmp_path, make_png, k5, monkeypatch
):
    make_png("in/good.png")
    locked = make_png("in/locked.png")
    real_open = open

    def guarded_open(file, *args, **kwargs):
        if Path(file) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    # read_image opens the file itself before any decoder sees it
    monkeypatch.setattr(imageio, "open", guarded_open, raising=False)
    result = run("restore", tmp_path / "in", "-k", k5, "-o", tmp_path / "out")
    assert result.exit_code == 1
    (line,) = [x for x in error_lines(result.stderr) if "locked.png" in x][:1]
    assert "cannot be read (Permission denied)" in line
    assert (tmp_path / "out" / "good.png").exists()
    assert not (tmp_path / "out" / "locked.png").exists()


def test_restore_output_subfolder_is_a_file_fails_those_files_only(
    tmp_path, make_png, k5
):
    make_png("in/a.png")
    make_png("in/sub/b.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").write_text("in the way")
    result = run("restore", tmp_path / "in", "-k", k5, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert (
        "cannot create the output folder" in result.stderr
        and "is a file" in result.stderr
    )
    assert (tmp_path / "out" / "a.png").exists()
    assert (tmp_path / "out" / "sub").read_text() == "in the way"


def test_restore_output_onto_reference_refused_reference_intact(tmp_path, make_png, k5):
    make_png("in/a.png")
    ref = make_png("sharp/a.png", seed=3)
    before = ref.read_bytes()
    result = run(
        "restore",
        tmp_path / "in",
        "-k",
        k5,
        "-r",
        tmp_path / "sharp",
        "-o",
        tmp_path / "sharp",
        "--overwrite",
    )
    assert result.exit_code == 1
    assert "would overwrite" in result.stderr
    assert ref.read_bytes() == before


def test_restore_two_inputs_one_output_name_exits_2(tmp_path, make_png, k5):
    make_png("in/a.png")
    _save(tmp_path / "in" / "a.jpg", _photo(24, 31, 3))
    result = run(
        "restore",
        tmp_path / "in",
        "-k",
        k5,
        "-o",
        tmp_path / "out",
        "--bit-depth",
        "float32",
    )
    assert result.exit_code == 2
    assert "would both be written as" in result.stderr and "a.tif" in result.stderr
    assert not (tmp_path / "out").exists()


def test_restore_out_inside_input_folder_skips_earlier_outputs(tmp_path, make_png, k5):
    make_png("in/a.png")
    first = run(
        "restore", tmp_path / "in", "-k", k5, "-o", tmp_path / "in" / "restored"
    )
    assert first.exit_code == 0, first.output
    again = run(
        "restore",
        tmp_path / "in",
        "-k",
        k5,
        "-o",
        tmp_path / "in" / "restored",
        "--overwrite",
    )
    assert again.exit_code == 0, again.output
    assert "skipped 1 image(s) under --out" in again.stderr
    assert not (tmp_path / "in" / "restored" / "restored").exists()


def test_restore_report_with_unknown_extension_exits_2_before_any_work(
    tmp_path, make_png, k5
):
    result = run(
        "restore",
        make_png("a.png"),
        "-k",
        k5,
        "-o",
        tmp_path / "out",
        "--report",
        tmp_path / "r.txt",
    )
    assert result.exit_code == 2 and "use .json or .csv" in result.stderr
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------
# files


def _bad_files(folder: Path) -> dict[str, str]:
    """Write broken inputs; return {name: fragment of its expected error}."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.png"
    _save(good, _photo(24, 31, 3))
    data = good.read_bytes()
    (folder / "zero.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "text.png").write_text("this is not an image\n")
    frames = [PILImage.fromarray(_photo(16, 16, 3, seed=s)) for s in range(3)]
    frames[0].save(folder / "animated.png", save_all=True, append_images=frames[1:])
    tifffile.imwrite(folder / "pages.tif", np.stack([_photo(16, 16, 1)[..., 0]] * 2))
    _save(folder / "bomb.png", np.zeros((300, 400), np.uint8))
    return {
        "zero.png": "file is empty (0 bytes)",
        "truncated.png": "truncated or corrupt PNG",
        "text.png": "not a PNG, JPEG, TIFF or BMP image",
        "animated.png": "has 3 frames",
        "pages.tif": "has 2 pages",
        "bomb.png": "exceeds the limit of 100000 pixels",
    }


def test_restore_broken_files_each_fail_one_line_rest_done(tmp_path, k5):
    expected = _bad_files(tmp_path / "in")
    report = tmp_path / "report.json"
    result = run(
        "restore",
        tmp_path / "in",
        "-k",
        k5,
        "-o",
        tmp_path / "out",
        "--max-pixels",
        100_000,
        "--report",
        report,
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert (tmp_path / "out" / "good.png").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]
    lines = error_lines(result.stderr)
    for name, fragment in expected.items():
        (line,) = [x for x in lines if f"{name}:" in x]
        assert fragment in line, line
    assert f"{len(expected)} of {len(expected) + 1} images failed" in result.stderr
    rows = {Path(r["input"]).name: r for r in json.loads(report.read_text())["results"]}
    assert rows["good.png"]["error"] is None
    for name, fragment in expected.items():
        assert fragment in rows[name]["error"] and rows[name]["output"] is None


def test_restore_max_pixels_names_limit_and_flag_raises_it(tmp_path, k5):
    big = _save(tmp_path / "big.png", _photo(40, 50, 1)[..., 0])
    refused = run(
        "restore", big, "-k", k5, "-o", tmp_path / "out", "--max-pixels", 1000
    )
    assert refused.exit_code == 1
    assert "2000 pixels exceeds the limit of 1000" in refused.stderr
    assert "--max-pixels 2000" in refused.stderr
    assert (
        run(
            "restore", big, "-k", k5, "-o", tmp_path / "out", "--max-pixels", 2000
        ).exit_code
        == 0
    )
    assert (
        run(
            "restore", big, "-k", k5, "-o", tmp_path / "o2", "--max-pixels", 0
        ).exit_code
        == 0
    )
    assert (
        run(
            "restore", big, "-k", k5, "-o", tmp_path / "o3", "--max-pixels", -1
        ).exit_code
        == 2
    )


def test_restore_fail_fast_stops_at_first_failure(tmp_path, make_png, k5):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a_bad.png").write_bytes(b"")
    make_png("in/b_good.png")
    report = tmp_path / "r.json"
    result = run(
        "restore",
        tmp_path / "in",
        "-k",
        k5,
        "-o",
        tmp_path / "out",
        "--fail-fast",
        "--report",
        report,
    )
    assert result.exit_code == 1
    assert (
        "stopped at the first failure (--fail-fast): 1 of 2 images not started"
        in result.stderr
    )
    assert not (tmp_path / "out" / "b_good.png").exists()
    doc = json.loads(report.read_text())
    assert doc["status"]["stopped_by"] == "--fail-fast"
    assert [Path(p).name for p in doc["not_started"]] == ["b_good.png"]


# ----------------------------------------------------------------------------
# modes and depths


def _palette(p):
    return _save(p / "palette.png", _photo(12, 10, 3), "P")


def _one_bit(p):
    return _save(p / "onebit.png", _photo(12, 10, 1)[..., 0], "1")


def _cmyk(p):
    return _save(p / "cmyk.jpg", _photo(12, 10, 3), "CMYK", quality=95)


def _gray_alpha(p):
    return _save(p / "la.png", _photo(12, 10, 2))


def _gray16(p):
    path = p / "g16.png"
    data = _photo(12, 10, 1)[..., 0].astype(np.uint16) * 257 + 3
    PILImage.fromarray(data).save(path)
    return path


def _float_tiff(p):
    path = p / "f32.tif"
    data = np.linspace(-0.5, 3.0, 12 * 10, dtype=np.float32).reshape(12, 10)
    tifffile.imwrite(path, data)
    return path


@pytest.mark.parametrize(
    "make, mode, dtype, note",
    [
        (_palette, "RGB", np.uint8, "palette image converted to RGB"),
        (_one_bit, "L", np.uint8, "1-bit image read as 8-bit gray"),
        (_cmyk, "RGB", np.uint8, "CMYK converted to RGB"),
        (_gray_alpha, "LA", np.uint8, None),
        (_gray16, "L", np.uint16, None),
        (_float_tiff, "L", np.float32, None),
    ],
    ids=["palette", "1-bit", "cmyk", "gray+alpha", "gray16", "float32"],
)
def test_restore_mode_converted_as_documented_and_said(
    tmp_path, make, mode, dtype, note
):
    source = make(tmp_path)
    # JPEG is lossy: compare a lossless copy
    out = (
        tmp_path
        / "out"
        / (source.stem + (".png" if source.suffix == ".jpg" else source.suffix))
    )
    out.parent.mkdir()
    record = restore_file(source, out, RestoreOptions(kernel=identity()))
    assert record["error"] is None
    image, again = read_image(source), read_image(out)
    assert again.mode == mode and again.dtype == dtype
    # the identity kernel gives back exactly what was read: nothing rescaled
    np.testing.assert_array_equal(again.data, image.data)
    if image.alpha is not None:
        np.testing.assert_array_equal(again.alpha, image.alpha)
    if note is None:
        assert record["notes"] == []
    else:
        assert any(note in n for n in record["notes"])


def test_restore_float_range_never_guessed_uint8_never_as_0_255(tmp_path):
    f32 = _float_tiff(tmp_path)
    u8 = _save(tmp_path / "u8.png", np.array([[0, 1, 128, 255]], np.uint8))
    for source, top in ((f32, 1.0), (u8, 255)):
        out = tmp_path / f"out{source.suffix}"
        record = restore_file(source, out, RestoreOptions(kernel=identity()))
        assert record["data_range"] == top and record["clipped"] == 0.0
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), tifffile.imread(f32))
    assert np.asarray(PILImage.open(tmp_path / "out.png")).tolist() == [
        [0, 1, 128, 255]
    ]


def test_restore_conversion_note_printed_on_stderr(tmp_path, k5):
    source = _palette(tmp_path)
    result = run("restore", source, "-k", k5, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (
        "note:" in result.stderr and "palette image converted to RGB" in result.stderr
    )


# ----------------------------------------------------------------------------
# kernels


class _Boom:
    """Unpickling this would create a file: proof that nothing was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _kernel_cases(p: Path) -> dict[str, tuple[Path, str]]:
    cases = {}

    def npy(name, array, **kw):
        np.save(p / name, array, **kw)
        return p / name

    marker = p / "unpickled"
    obj = np.empty(1, dtype=object)
    obj[0] = _Boom(marker)
    cases["pickled"] = (
        npy("obj.npy", obj, allow_pickle=True),
        "refused without unpickling",
    )
    cases["1-D"] = (npy("k1.npy", np.ones(3) / 3), "got 1-D of shape (3,)")
    cases["5-D"] = (npy("k5.npy", np.ones((1, 1, 1, 2, 2))), "got 5-D")
    nan = np.eye(3)[::-1] * 0 + np.diag([0.2, 0.3, 0.5])
    nan[0, 0] = np.nan
    cases["nan"] = (npy("nan.npy", nan), "1 NaN or infinite taps")
    cases["inf"] = (npy("inf.npy", np.array([[np.inf, 1.0]])), "NaN or infinite taps")
    cases["zero-anchor"] = (
        npy("za.npy", np.array([[0.5, 0.5], [0.0, 0.0]])),
        "anchor tap",
    )
    cases["empty-npy"] = (npy("empty.npy", np.zeros((0, 0))), "kernel is empty")
    (p / "empty.txt").write_text("# nothing\n")
    cases["empty-txt"] = (p / "empty.txt", "the kernel file is empty")
    (p / "zero.npy").write_bytes(b"")
    cases["zero-bytes"] = (p / "zero.npy", "zero.npy")
    g = np.exp(-((np.arange(5) - 2.0) ** 2) / 2)
    cases["centred"] = (
        npy("centred.npy", np.outer(g, g) / np.outer(g, g).sum()),
        "--anchor",
    )
    plus = np.array([[0, 0.1, 0], [0.1, 0.6, 0.1], [0, 0.1, 0]])
    cases["centred-zero-corner"] = (npy("plus.npy", plus), "--anchor center")
    return cases


CASES = [
    "pickled",
    "1-D",
    "5-D",
    "nan",
    "inf",
    "zero-anchor",
    "empty-npy",
    "empty-txt",
    "zero-bytes",
    "centred",
    "centred-zero-corner",
]


@pytest.mark.parametrize("case", CASES)
def test_restore_unusable_kernel_exits_2_one_line(tmp_path, make_png, case):
    path, fragment = _kernel_cases(tmp_path)[case]
    result = run("restore", make_png("a.png"), "-k", path, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "unpickled").exists()
    if case.startswith("centred"):
        assert "wiener" in lines[0]


def test_restore_kernel_sum_far_from_one_warns_never_rescales(tmp_path, kernel_file):
    k = make_kernel("diagonal", 3)
    sharp = tmp_path / "sharp.png"
    _save(sharp, _photo(24, 31, 1)[..., 0])
    blurred = tmp_path / "in" / "a.tif"
    blurred.parent.mkdir()
    data = blur_array(read_image(sharp).data, k)
    tifffile.imwrite(blurred, data[..., 0].astype(np.float32))
    double = tmp_path / "double.npy"
    np.save(double, 2 * k.weights)
    report = tmp_path / "r.json"

    result = run(
        "restore", blurred, "-k", double, "-o", tmp_path / "out", "--report", report
    )
    assert result.exit_code == 0, result.output
    assert (
        "kernel taps sum to 2, not 1" in result.stderr
        and "--normalize" in result.stderr
    )
    header = json.loads(report.read_text())["kernel"]
    assert header["sum"] == pytest.approx(2.0) and "not rescaled" in header["notes"][0]
    restored = read_image(tmp_path / "out" / "a.tif").data
    np.testing.assert_allclose(restored, read_image(sharp).data / 2, atol=1e-5)

    result = run(
        "restore",
        blurred,
        "-k",
        double,
        "-o",
        tmp_path / "out2",
        "--report",
        report,
        "--normalize",
    )
    assert result.exit_code == 0 and "warning" not in result.stderr
    header = json.loads(report.read_text())["kernel"]
    assert (
        header["sum"] == pytest.approx(1.0) and "taps summed to 2" in header["notes"][0]
    )
    np.testing.assert_allclose(
        read_image(tmp_path / "out2" / "a.tif").data, read_image(sharp).data, atol=1e-5
    )


def test_restore_mixing_kernel_channel_mismatch_fails_that_file(tmp_path, make_png):
    w = np.zeros((3, 3, 2, 2))
    w[range(3), range(3), 1, 1] = 1.0
    w[range(3), range(3), 0, 0] = 0.2
    record = restore_file(
        make_png("g.png", channels=1),
        tmp_path / "o.png",
        RestoreOptions(kernel=Kernel(w)),
    )
    assert "the kernel has 3 channels" in record["error"] and record["output"] is None


# ----------------------------------------------------------------------------
# results


def test_restore_non_finite_float32_output_refused_with_gain(tmp_path, make_png):
    k = Kernel(np.array([[1.0, 1.0], [1.0, 1e-3]]))
    out = tmp_path / "o.tif"
    record = restore_file(
        make_png("a.png", h=64, w=64),
        out,
        RestoreOptions(kernel=k, bit_depth="float32", stability=stability(k)),
    )
    assert "non-finite values (kernel noise gain inf, unstable)" in record["error"]
    assert "nothing written" in record["error"] and not out.exists()
    assert leftovers(tmp_path) == []


def test_restore_out_of_range_clipped_counted_float32_keeps(tmp_path, make_png):
    # restoring a sharp image overshoots: values outside [0, 1]
    source = make_png("a.png")
    k = make_kernel("diagonal", 5)
    eight = restore_file(source, tmp_path / "o.png", RestoreOptions(kernel=k))
    full = restore_file(
        source, tmp_path / "o.tif", RestoreOptions(kernel=k, bit_depth="float32")
    )
    assert eight["clipped"] > 0.01 and full["clipped"] == 0.0
    (note,) = [n for n in eight["notes"] if "clipped" in n]
    count = int(note.split()[0])
    values = tifffile.imread(tmp_path / "o.tif")
    assert count == int(np.sum((values < 0) | (values > 1)))
    assert values.min() < 0 and values.max() > 1
    stored = read_image(tmp_path / "o.png").data
    assert stored.min() >= 0 and stored.max() <= 1


# ----------------------------------------------------------------------------
# references


def test_restore_references_missing_mismatched_rows_only(tmp_path, k5):
    for name in ("a", "b", "c", "d"):
        _save(tmp_path / "in" / f"{name}.png", _photo(24, 31, 3, seed=1))
    _save(tmp_path / "sharp" / "a.png", _photo(24, 31, 3))
    _save(tmp_path / "sharp" / "c.png", _photo(20, 31, 3))
    _save(tmp_path / "sharp" / "d.png", _photo(24, 31, 1)[..., 0])
    report = tmp_path / "r.json"
    result = run(
        "restore",
        tmp_path / "in",
        "-k",
        k5,
        "-r",
        tmp_path / "sharp",
        "-o",
        tmp_path / "out",
        "--report",
        report,
    )
    assert result.exit_code == 0, result.output
    rows = {Path(r["input"]).stem: r for r in json.loads(report.read_text())["results"]}
    assert rows["a"]["psnr_after"] is not None and rows["a"]["reference_error"] is None
    assert "no reference named b" in rows["b"]["reference_error"]
    assert "31x20x3, the input is 31x24x3; not scored" in rows["c"]["reference_error"]
    assert "31x24x1, the input is 31x24x3" in rows["d"]["reference_error"]
    for name in "bcd":
        assert rows[name]["psnr_after"] is None and rows[name]["error"] is None
        assert rows[name]["output"] is not None
    warnings = [x for x in result.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 3


@pytest.mark.parametrize("depth, top", [("8", 255), ("16", 65535), ("float32", 1.0)])
def test_restore_scores_use_data_range_of_bit_depth(tmp_path, make_png, depth, top):
    k = make_kernel("diagonal", 3)
    sharp = read_image(make_png("sharp.png"))
    out = tmp_path / "in.tif"
    options = {"8": 8, "16": 16, "float32": "float32"}[depth]
    imageio.write_image(out, blur_array(sharp.data, k), like=sharp, bit_depth=options)
    record = restore_file(
        out, tmp_path / "o.tif", RestoreOptions(kernel=k), tmp_path / "sharp.png"
    )
    assert record["data_range"] == top
    restored = read_image(tmp_path / "o.tif").data
    expected = psnr(sharp.data, restored, data_range=1.0)
    assert record["psnr_after"] == pytest.approx(expected, abs=1e-9)


# ----------------------------------------------------------------------------
# the shape contract


@pytest.mark.parametrize("h, w", [(1, 1), (1, 9), (9, 1), (7, 5), (4, 11)])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_restore_keeps_exact_size_and_channels(tmp_path, h, w, channels):
    source = _save(
        tmp_path / "a.png",
        _photo(h, w, channels) if channels > 1 else _photo(h, w, 1)[..., 0],
    )
    record = restore_file(
        source, tmp_path / "o.png", RestoreOptions(kernel=make_kernel("diagonal", 5))
    )
    assert record["error"] is None
    before, after = read_image(source), read_image(tmp_path / "o.png")
    assert after.data.shape == before.data.shape and after.mode == before.mode
    assert (record["height"], record["width"]) == (h, w)


@pytest.mark.parametrize(
    "anchor", ["bottom-right", "bottom-left", "top-right", "top-left"]
)
def test_restore_impulse_lands_on_its_own_pixel(tmp_path, anchor):
    k = make_kernel("corner-gaussian", 5, sigma=1.2, anchor=anchor)
    sharp = np.zeros((15, 17, 1))
    sharp[6, 9] = 1.0
    blurred = blur_array(sharp, k)
    assert np.count_nonzero(blurred > 1e-6) > 1  # it really was blurred
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, blurred[..., 0].astype(np.float32))
    record = restore_file(path, tmp_path / "o.tif", RestoreOptions(kernel=k))
    assert record["error"] is None
    restored = read_image(tmp_path / "o.tif").data[..., 0]
    assert np.unravel_index(np.argmax(restored), restored.shape) == (6, 9)
    np.testing.assert_allclose(restored, sharp[..., 0], atol=1e-5)


def test_restore_wiener_centred_impulse_lands_on_its_own_pixel(tmp_path):
    g = np.exp(-((np.arange(5) - 2.0) ** 2) / 2)
    k = Kernel(np.outer(g, g) / np.outer(g, g).sum(), "center")
    sharp = np.zeros((21, 19, 1))
    sharp[10, 7] = 1.0
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, blur_array(sharp, k)[..., 0].astype(np.float32))
    record = restore_file(
        path,
        tmp_path / "o.tif",
        RestoreOptions(kernel=k, method="wiener", params={"balance": 1e-3}),
    )
    assert record["error"] is None, record["error"]
    restored = read_image(tmp_path / "o.tif").data[..., 0]
    assert np.unravel_index(np.argmax(restored), restored.shape) == (10, 7)


# ----------------------------------------------------------------------------
# devices and unexpected errors


def test_restore_failing_device_names_it_writes_nothing(
    tmp_path, make_png, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError(
            "CUDA error: an illegal memory access was encountered\n"
            "CUDA kernel errors might be reported later"
        )

    monkeypatch.setattr(restore_mod, "restore_array", broken)
    out = tmp_path / "o.png"
    record = restore_file(
        make_png("a.png"), out, RestoreOptions(kernel=identity(), device="cuda:0")
    )
    assert record["error"].count("\n") == 0
    assert (
        "failed on device cuda:0 (RuntimeError: CUDA error: an illegal memory"
        in record["error"]
    )
    assert "retry with --device cpu" in record["error"]
    assert not out.exists() and record["output"] is None


def test_restore_cli_failing_device_fails_each_file_exit_1(
    tmp_path, make_png, k5, monkeypatch
):
    import deblur.cli.restore as cli_restore

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cli_restore, "resolve_device", lambda name: "cuda:0")
    monkeypatch.setattr(restore_mod, "restore_array", broken)
    make_png("in/a.png")
    make_png("in/b.png")
    result = run(
        "restore", tmp_path / "in", "-k", k5, "-o", tmp_path / "out", "--device", "cuda"
    )
    assert result.exit_code == 1
    lines = error_lines(result.stderr)
    assert sum("device cuda:0" in x and "--device cpu" in x for x in lines) == 2
    assert not any((tmp_path / "out").rglob("*.png"))


def test_restore_cpu_solver_error_names_the_cpu(tmp_path, make_png, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(restore_mod, "inverse_causal_conv2d", broken)
    record = restore_file(
        make_png("a.png"), tmp_path / "o.png", RestoreOptions(kernel=identity())
    )
    assert (
        "failed on the cpu (ZeroDivisionError: float division by zero)"
        in record["error"]
    )


def test_restore_unexpected_exception_is_that_files_one_line(
    tmp_path, make_png, k5, monkeypatch
):
    make_png("in/a.png")
    make_png("in/b.png")
    real = imageio.read_image

    def flaky(path, **kwargs):
        if Path(path).name == "a.png":
            raise KeyError("boom")
        return real(path, **kwargs)

    monkeypatch.setattr(imageio, "read_image", flaky)
    result = run("restore", tmp_path / "in", "-k", k5, "-o", tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [x for x in error_lines(result.stderr) if "a.png:" in x][:1]
    assert "unexpected KeyError while reading: 'boom'" in line
    assert (tmp_path / "out" / "b.png").exists()


# ----------------------------------------------------------------------------
# writing: disk full, races, output depth


def test_restore_disk_full_leaves_nothing_behind(tmp_path, make_png, monkeypatch):
    def full(tmp, samples, mode):
        Path(tmp).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(imageio._WRITERS, "PNG", full)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "a.png"
    record = restore_file(make_png("a.png"), out, RestoreOptions(kernel=identity()))
    assert (
        record["error"]
        == f"{out}: not written (No space left on device); nothing left behind"
    )
    assert list((tmp_path / "out").iterdir()) == []


def test_restore_output_appearing_meanwhile_is_not_replaced(
    tmp_path, make_png, monkeypatch
):
    out = tmp_path / "o.png"
    real = restore_mod._check_result

    def racing(*args):
        real(*args)
        out.write_bytes(b"the other run's file")

    monkeypatch.setattr(restore_mod, "_check_result", racing)
    record = restore_file(make_png("a.png"), out, RestoreOptions(kernel=identity()))
    assert "output exists; pass --overwrite" in record["error"]
    assert out.read_bytes() == b"the other run's file"
    assert leftovers(tmp_path) == []


def test_restore_bit_depth_16_to_jpeg_exits_2_up_front(tmp_path, k5):
    source = _save(tmp_path / "a.jpg", _photo(24, 31, 3))
    for command in ("restore", "blur"):
        result = run(
            command, source, "-k", k5, "-o", tmp_path / "out", "--bit-depth", "16"
        )
        assert result.exit_code == 2 and "JPEG and BMP hold 8 bits" in result.stderr
    assert not (tmp_path / "out").exists()


def test_blur_float32_writes_tiff_unclipped_8bit_clips(tmp_path, make_png, kernel_file):
    # a kernel summing to 2 pushes bright pixels above 1
    k = tmp_path / "k2.npy"
    np.save(k, 2 * make_kernel("diagonal", 3).weights)
    source = make_png("a.png")
    full = run("blur", source, "-k", k, "-o", tmp_path / "f", "--bit-depth", "float32")
    eight = run("blur", source, "-k", k, "-o", tmp_path / "e", "--bit-depth", "8")
    assert full.exit_code == 0 and eight.exit_code == 0, full.output + eight.output
    values = tifffile.imread(tmp_path / "f" / "a.tif")
    assert values.dtype == np.float32 and values.max() > 1
    assert "% clipped" in eight.stdout and "% clipped" not in full.stdout
    assert read_image(tmp_path / "e" / "a.png").data.max() <= 1


def test_blur_bad_file_fails_alone_and_fail_fast_stops(tmp_path, make_png, k5):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_text("nope")
    make_png("in/b.png")
    result = run("blur", tmp_path / "in", "-k", k5, "-o", tmp_path / "out")
    assert result.exit_code == 1 and "a.png: not a PNG" in result.stderr
    assert (tmp_path / "out" / "b.png").exists()
    result = run(
        "blur", tmp_path / "in", "-k", k5, "-o", tmp_path / "o2", "--fail-fast"
    )
    assert result.exit_code == 1 and "--fail-fast" in result.stderr
    assert not (tmp_path / "o2" / "b.png").exists()


def test_restore_record_has_solve_seconds_within_seconds(tmp_path, make_png, k5):
    report = tmp_path / "r.csv"
    result = run(
        "restore",
        make_png("a.png"),
        "-k",
        k5,
        "-o",
        tmp_path / "out",
        "--report",
        report,
    )
    assert result.exit_code == 0
    (fields,) = list(csv.DictReader(report.read_text().splitlines()))
    assert 0 < float(fields["solve_seconds"]) <= float(fields["seconds"])


# ----------------------------------------------------------------------------
# interruptions


def test_restore_interrupt_in_process_reports_done_exit_130(
    tmp_path, make_png, k5, monkeypatch
):
    for name in "abc":
        make_png(f"in/{name}.png")
    real = restore_mod.restore_array
    calls = []

    def interrupting(data, options):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(data, options)

    monkeypatch.setattr(restore_mod, "restore_array", interrupting)
    report = tmp_path / "r.json"
    result = run(
        "restore", tmp_path / "in", "-k", k5, "-o", tmp_path / "out", "--report", report
    )
    assert result.exit_code == 130
    assert (
        "interrupted by SIGINT: 1 of 3 images restored, 0 failed, 1 not started"
        in result.stderr
    )
    assert "b.png was in progress, nothing written for it" in result.stderr
    doc = json.loads(report.read_text())
    assert [Path(r["input"]).name for r in doc["results"]] == ["a.png"]
    assert [Path(p).name for p in doc["not_started"]] == ["c.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]


def test_restore_interrupt_while_scoring_keeps_complete_output(
    tmp_path, make_png, k5, monkeypatch
):
    make_png("in/a.png")
    make_png("sharp/a.png")
    monkeypatch.setattr(
        restore_mod, "_score", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt())
    )
    report = tmp_path / "r.json"
    result = run(
        "restore",
        tmp_path / "in",
        "-k",
        k5,
        "-r",
        tmp_path / "sharp",
        "-o",
        tmp_path / "out",
        "--report",
        report,
    )
    assert result.exit_code == 130
    (row,) = json.loads(report.read_text())["results"]
    assert row["error"] is None and row["output"] is not None
    assert "interrupted while scoring; output complete" in row["notes"]
    read_image(row["output"])


def _child_setup(close_stdin: bool):
    def setup():
        # a background job may inherit SIGINT ignored; a user's Ctrl-C is not
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if close_stdin:
            os.close(0)

    return setup


def _many_images(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        _save(folder / f"{i:03d}.png", _photo(size, size, 3, seed=i))


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Four real runs at once: two interrupted after their first output (SIGINT
    with stdin closed, SIGTERM with stdin at /dev/null), two writing the same
    folder concurrently with --overwrite."""
    if not EXE.exists():
        pytest.skip("the deblur console script is not installed in this environment")
    root = tmp_path_factory.mktemp("runs")
    _many_images(root / "in", 40, 192)
    _many_images(root / "small", 12, 96)
    k = root / "k.npy"
    save_kernel(k, make_kernel("diagonal", 5))
    common = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = {}
    for sig, close in ((signal.SIGINT, True), (signal.SIGTERM, False)):
        out, report = root / f"out_{sig.name}", root / f"{sig.name}.json"
        args = [
            str(EXE),
            "restore",
            str(root / "in"),
            "-k",
            str(k),
            "-o",
            str(out),
            "--report",
            str(report),
        ]
        stdin = None if close else subprocess.DEVNULL
        proc = subprocess.Popen(
            args, stdin=stdin, preexec_fn=_child_setup(close), **common
        )
        procs[sig.name] = (proc, sig, out, report)
    args = [
        str(EXE),
        "restore",
        str(root / "small"),
        "-k",
        str(k),
        "-o",
        str(root / "shared"),
        "--overwrite",
    ]
    for i in range(2):
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, **common)
        procs[f"writer{i}"] = (proc, None, root / "shared", None)

    deadline = time.monotonic() + 240
    pending = {n: v for n, v in procs.items() if v[1] is not None}
    while pending and time.monotonic() < deadline:
        for name, (proc, sig, out, report) in list(pending.items()):
            if out.exists() and any(
                p.suffix == ".png" and not p.name.startswith(".") for p in out.iterdir()
            ):
                proc.send_signal(sig)
                pending.pop(name)
            elif proc.poll() is not None:
                pending.pop(name)
        time.sleep(0.02)
    results = {"root": root, "kernel": k}
    for name, (proc, sig, out, report) in procs.items():
        stdout, stderr = proc.communicate(timeout=240)
        results[name] = (proc.returncode, stdout, stderr, out, report)
    return results


@pytest.mark.parametrize("name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_restore_real_signal_leaves_complete_files_and_report(real_runs, name, code):
    rc, _, stderr, out, report = real_runs[name]
    assert rc == code, stderr
    assert "Traceback" not in stderr
    (summary,) = [
        x for x in stderr.splitlines() if x.startswith("error: interrupted by")
    ]
    assert (
        f"interrupted by {name}:" in summary
        and "every file written is complete" in summary
    )
    assert leftovers(out) == []
    written = sorted(p for p in out.iterdir())
    assert 0 < len(written) < 40
    for p in written:
        assert read_image(p).data.shape == (192, 192, 3)
    doc = json.loads(report.read_text())
    done = [r for r in doc["results"] if r["error"] is None]
    assert doc["status"]["stopped_by"] == name and doc["status"]["done"] == len(done)
    assert {Path(r["output"]).name for r in done} <= {p.name for p in written}
    assert len(written) - len(done) <= 1  # at most the file the signal cut short
    in_progress = 1 if doc["status"].get("in_progress") else 0
    assert len(doc["results"]) + len(doc["not_started"]) + in_progress == 40
    # no TTY: no progress bar drawn, nothing waited for input
    assert "\x1b[" not in stderr and "restoring" not in stderr


def test_restore_two_concurrent_runs_never_corrupt_outputs(real_runs, tmp_path):
    for name in ("writer0", "writer1"):
        rc, _, stderr, out, _ = real_runs[name]
        assert rc == 0, stderr
    assert leftovers(out) == []
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:03d}.png" for i in range(12)]
    for name in names:
        assert read_image(out / name).data.shape == (96, 96, 3)
    expected = restore_file(
        real_runs["root"] / "small" / "000.png",
        tmp_path / "check.png",
        RestoreOptions(kernel=load_kernel(real_runs["kernel"])),
    )
    assert expected["error"] is None
    assert (out / "000.png").read_bytes() == (tmp_path / "check.png").read_bytes()


def test_restore_name_not_matching_content_refused_before_solving(
    tmp_path, monkeypatch
):
    source = tmp_path / "photo.jpg"
    tifffile.imwrite(source, np.full((5, 6), 0.5, np.float32))
    monkeypatch.setattr(
        restore_mod, "restore_array", lambda *a: pytest.fail("solved anyway")
    )
    record = restore_file(source, tmp_path / "o.jpg", RestoreOptions(kernel=identity()))
    assert (
        "float32 samples cannot be written as o.jpg (it is a TIFF file)"
        in record["error"]
    )
    assert "rename the input for its format (.tif)" in record["error"]
    assert not (tmp_path / "o.jpg").exists()


def test_restore_interrupt_before_batch_exits_130_one_line(
    tmp_path, make_png, k5, monkeypatch
):
    import deblur.cli._common as common

    def interrupted(kernel):
        raise KeyboardInterrupt

    monkeypatch.setattr(common, "stability", interrupted)
    result = run("restore", make_png("a.png"), "-k", k5, "-o", tmp_path / "out")
    assert result.exit_code == 130
    expected = (
        "error: interrupted by SIGINT before the batch could finish; every file "
        "written is complete"
    )
    assert error_lines(result.stderr) == [expected]
    assert not (tmp_path / "out").exists()


def test_blur_sigterm_in_batch_exits_143(tmp_path, make_png, k5, monkeypatch):
    from deblur import synth
    from deblur.cli._common import Terminated

    make_png("in/a.png")
    make_png("in/b.png")
    real = synth.blur_array
    calls = []

    def terminated(*args):
        calls.append(1)
        if len(calls) == 2:
            raise Terminated(signal.SIGTERM)
        return real(*args)

    monkeypatch.setattr(synth, "blur_array", terminated)
    result = run("blur", tmp_path / "in", "-k", k5, "-o", tmp_path / "out")
    assert result.exit_code == 143
    assert (
        "interrupted by SIGTERM: 1 of 2 images blurred, 0 failed, 0 not started"
        in result.stderr
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]
