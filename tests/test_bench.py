"""``deblur bench``: the library's records and ratios, and the command."""

import json

import pytest
from typer.testing import CliRunner

from deblur.bench import METHODS, TARGETS, ratios, run_bench
from deblur.cli import app

FIELDS = {"case", "method", "seconds", "min_seconds", "repeats", "note"}


def test_run_bench_tiny_gives_one_record_per_method_and_case():
    records = run_bench(
        size=(16, 20), channels=2, kernel_sizes=(2, 3), repeats=2, dense_size=6
    )

    assert all(set(r) == FIELDS for r in records)
    cases = {r["case"] for r in records}
    assert cases == {"16x20x2 k=2", "16x20x2 k=3", "6x6x1 k=3"}
    for case in ("16x20x2 k=2", "16x20x2 k=3"):
        methods = [r["method"] for r in records if r["case"] == case]
        assert methods == [
            m for m in METHODS if m not in ("torch.linalg.solve", "deblur.substitution")
        ]
    for r in records:
        if r["seconds"] is None:
            assert r["note"].startswith("skipped: ") and r["repeats"] == 0
        else:
            assert 0 < r["min_seconds"] <= r["seconds"]
            assert 1 <= r["repeats"] <= 21


def test_run_bench_methods_subset_and_callback():
    seen = []

    records = run_bench(
        size=(8, 8),
        channels=1,
        kernel_sizes=(3,),
        repeats=3,
        methods=["clone", "deblur.inverse"],
        on_record=seen.append,
    )

    assert [r["method"] for r in records] == ["deblur.inverse", "clone"]
    assert seen == records
    assert all(r["repeats"] == 3 for r in records)


def test_run_bench_unknown_method_raises():
    with pytest.raises(ValueError, match=r"unknown benchmark methods \['numpy'\]"):
        run_bench(size=(8, 8), methods=["numpy"])


def test_run_bench_non_positive_size_raises():
    with pytest.raises(ValueError, match=r"sizes must be positive, got size=\(0, 8\)"):
        run_bench(size=(0, 8))


def test_ratios_marks_targets_met_and_not_met():
    case = "8x8x1 k=3"
    records = [
        {"case": case, "method": "deblur.inverse", "seconds": 1.0},
        {"case": case, "method": "torch.conv2d", "seconds": 4.0},
        {"case": case, "method": "deblur.backward", "seconds": 3.0},
        {"case": case, "method": "scipy.spsolve_triangular", "seconds": None},
        {"case": "8x8x1 k=5", "method": "deblur.inverse", "seconds": 1.0},
        {"case": "8x8x1 k=5", "method": "clone", "seconds": 0.01},
    ]

    rows = {(r["case"], r["ratio"]): r for r in ratios(records)}

    assert rows[case, "inverse / conv2d"]["value"] == 0.25
    assert rows[case, "inverse / conv2d"]["met"] is True
    assert rows[case, "backward / inverse"]["met"] is False
    assert rows[case, "backward / inverse"]["target"] == "<= 2"
    assert (case, "scipy / inverse") not in rows  # its timing is missing
    # the clone target is for k = 3 only: reported without a verdict for k = 5
    assert rows["8x8x1 k=5", "inverse / clone"]["met"] is None
    assert {t.name for t in TARGETS} >= {r[1] for r in rows}


def test_bench_command_writes_json_records(tmp_path):
    target = tmp_path / "bench.json"

    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--size",
            "12x10",
            "--channels",
            "1",
            "--kernel-sizes",
            "2,3",
            "--repeats",
            "2",
            "--dense-size",
            "5",
            "--json",
            str(target),
        ],
    )

    assert result.exit_code == 0, result.output
    assert "deblur.inverse" in result.stdout and "inverse / conv2d" in result.stdout
    records = json.loads(target.read_text())
    assert {r["case"] for r in records} == {"12x10x1 k=2", "12x10x1 k=3", "5x5x1 k=3"}
    assert all(set(r) == FIELDS for r in records)
    inverse = [r for r in records if r["method"] == "deblur.inverse"]
    assert len(inverse) == 2 and all(r["seconds"] > 0 for r in inverse)
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left


def test_ratios_from_the_minimum():
    records = [
        {
            "case": "8x8x1 k=3",
            "method": "deblur.inverse",
            "seconds": 2.0,
            "min_seconds": 1.0,
        },
        {
            "case": "8x8x1 k=3",
            "method": "torch.conv2d",
            "seconds": 3.0,
            "min_seconds": 3.0,
        },
    ]

    (row,) = ratios(records, statistic="min_seconds")

    assert row["ratio"] == "inverse / conv2d" and row["value"] == 1 / 3
    assert row["met"] is True


def test_bench_command_statistic_min_titles_the_tables():
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--size",
            "8",
            "--channels",
            "1",
            "--kernel-sizes",
            "2",
            "--repeats",
            "1",
            "--dense-size",
            "0",
            "--statistic",
            "min",
        ],
    )

    assert result.exit_code == 0, result.output
    assert "min times, float32 8x8x1" in result.stdout
    assert "ratios of min times" in result.stdout


def test_bench_command_bad_statistic_names_the_flag():
    result = CliRunner().invoke(app, ["bench", "--statistic", "mean"])

    assert result.exit_code == 2
    assert "--statistic" in result.output and "use median or min" in result.output


def test_bench_command_bad_size_names_the_flag():
    result = CliRunner().invoke(app, ["bench", "--size", "big"])

    assert result.exit_code == 2
    assert "--size" in result.output and "give N or HxW" in result.output


def test_bench_command_json_into_missing_folder_fails(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--size",
            "8",
            "--json",
            str(tmp_path / "no" / "b.json"),
        ],
    )

    assert result.exit_code == 2
    assert "does not exist" in result.output
