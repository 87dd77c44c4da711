"""``deblur compare`` and ``restore --method``: every method on the same images."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from deblur.cli import app
from deblur.compare import best_method, compare_file
from deblur.kernel import load_kernel

runner = CliRunner()


def _pair(tmp_path, make_png, kernel, channels=3, h=33, w=40):
    sharp = make_png("sharp/p.png", h=h, w=w, channels=channels)
    result = runner.invoke(
        app, ["blur", str(sharp), "-k", str(kernel), "--out", str(tmp_path / "blurred")]
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "blurred" / "p.png", sharp


@pytest.mark.parametrize("channels", [1, 3])
def test_compare_file_scores_every_method(tmp_path, make_png, kernel_file, channels):
    k = kernel_file("diagonal", 3)
    blurred, sharp = _pair(tmp_path, make_png, k, channels)
    records, panels = compare_file(blurred, sharp, load_kernel(k))
    methods = [r["method"] for r in records]
    assert methods == [
        "blurred",
        "inverse",
        "wiener",
        "unsupervised-wiener",
        "richardson-lucy",
    ]
    by = {r["method"]: r for r in records}
    assert all(r["error"] is None for r in records)
    assert by["inverse"]["psnr"] > by["blurred"]["psnr"] + 10
    assert by["wiener"]["params"]["balance"] > 0
    assert best_method(records) == "inverse"
    assert [label.split()[0] for label, _ in panels] == [
        "blurred",
        *methods[1:],
        "reference",
    ]


def test_compare_centred_kernel_skips_inverse_with_reason(tmp_path, make_png):
    k = tmp_path / "c.npy"
    g = np.exp(-((np.arange(5) - 2) ** 2) / 2.0)
    np.save(k, np.outer(g, g) / np.outer(g, g).sum())
    sharp = make_png("sharp/p.png")
    blurred_dir = tmp_path / "blurred"
    r = runner.invoke(
        app,
        [
            "blur",
            str(sharp),
            "-k",
            str(k),
            "--anchor",
            "center",
            "--out",
            str(blurred_dir),
        ],
    )
    assert r.exit_code == 0, r.output
    result = runner.invoke(
        app,
        [
            "compare",
            str(blurred_dir / "p.png"),
            "-k",
            str(k),
            "--anchor",
            "center",
            "-r",
            str(sharp),
            "--out",
            str(tmp_path / "cmp"),
            "--report",
            str(tmp_path / "r.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = {
        r["method"]: r for r in json.loads((tmp_path / "r.json").read_text())["results"]
    }
    assert "no exact causal inverse" in rows["inverse"]["error"]
    assert rows["wiener"]["psnr"] > rows["blurred"]["psnr"]


def test_compare_cli_writes_table_and_readable_picture(tmp_path, make_png, kernel_file):
    k = kernel_file("corner-gaussian", 3, sigma=1.0)
    blurred, sharp = _pair(tmp_path, make_png, k)
    result = runner.invoke(
        app,
        [
            "compare",
            str(blurred),
            "-k",
            str(k),
            "-r",
            str(sharp),
            "--out",
            str(tmp_path / "cmp"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best" in result.output and "richardson-lucy" in result.output
    with Image.open(tmp_path / "cmp" / "p.png") as pic:
        pic.load()
        width, height = pic.size
    assert width > 3 * height  # six panels in one row


def test_compare_unknown_method_exits_2(tmp_path, make_png, kernel_file):
    k = kernel_file()
    img = make_png("a.png")
    result = runner.invoke(
        app,
        [
            "compare",
            str(img),
            "-k",
            str(k),
            "-r",
            str(img),
            "--methods",
            "inverse,magic",
        ],
    )
    assert result.exit_code == 2 and "--methods" in result.output


@pytest.mark.parametrize("method", ["wiener", "unsupervised-wiener", "richardson-lucy"])
def test_restore_method_baseline_keeps_size_and_depth(
    tmp_path, make_png, kernel_file, method
):
    k = kernel_file("diagonal", 3)
    blurred, sharp = _pair(tmp_path, make_png, k, channels=3, h=17, w=26)
    result = runner.invoke(
        app,
        [
            "restore",
            str(blurred),
            "-k",
            str(k),
            "--method",
            method,
            "-r",
            str(sharp),
            "--out",
            str(tmp_path / "out"),
            "--report",
            str(tmp_path / "r.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp_path / "out" / "p.png"))
    assert out.shape == (17, 26, 3) and out.dtype == np.uint8
    (row,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert row["method"] == method and row["params"]


@pytest.mark.parametrize(
    "extra, match",
    [
        (
            ["--method", "richardson-lucy", "--balance", "0.1"],
            "--balance applies to --method wiener",
        ),
        (
            ["--method", "wiener", "--num-iter", "5"],
            "--num-iter applies to --method richardson-lucy",
        ),
        (["--boundary", "symmetric"], "--boundary applies to the regularised methods"),
        (
            ["--method", "wiener", "--boundary", "wrap"],
            "--boundary must be zero, symmetric or none",
        ),
    ],
)
def test_restore_method_options_refused_where_they_do_not_apply(
    tmp_path, make_png, kernel_file, extra, match
):
    result = runner.invoke(
        app,
        [
            "restore",
            str(make_png("a.png")),
            "-k",
            str(kernel_file()),
            "-o",
            str(tmp_path / "o"),
            *extra,
        ],
    )
    assert result.exit_code == 2 and match in result.output


def test_restore_wiener_symmetric_boundary_recorded(tmp_path, make_png, kernel_file):
    k = kernel_file("diagonal", 3)
    blurred, sharp = _pair(tmp_path, make_png, k)
    result = runner.invoke(
        app,
        [
            "restore",
            str(blurred),
            "-k",
            str(k),
            "--method",
            "wiener",
            "--boundary",
            "symmetric",
            "--balance",
            "0.01",
            "-o",
            str(tmp_path / "out"),
            "--report",
            str(tmp_path / "r.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert row["params"]["boundary"] == "symmetric" and row["params"]["balance"] == 0.01


def test_compare_interrupted_exits_130_with_one_line(
    tmp_path, make_png, kernel_file, monkeypatch
):
    import deblur.cli.compare as compare_cli

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare_cli, "compare_file", stop)
    img, k = make_png("a.png"), kernel_file()
    result = runner.invoke(
        app,
        ["compare", str(img), "-k", str(k), "-r", str(img), "-o", str(tmp_path / "c")],
    )
    assert result.exit_code == 130
    assert "interrupted by SIGINT before every image was compared" in result.output
