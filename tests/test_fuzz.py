"""Mutated image and kernel files through ``deblur restore``: no traceback, one line each.

A small seeded run of ``tests/fuzz_restore.py``; the long run is
``.venv/bin/python tests/fuzz_restore.py --count 1000``.
"""

import pytest

from .fuzz_restore import deblur_exe, fuzz, fuzz_subprocess


def test_fuzz_restore_mutants_no_traceback_one_line_nothing_left(tmp_path):
    stats = fuzz(60, seed=0, workdir=tmp_path, kernel_count=30)
    assert stats.tracebacks == []
    assert stats.problems == []
    assert stats.unexpected == []
    # both paths were exercised: valid seeds and lucky mutants restore, most fail
    assert stats.ok >= 19 and sum(stats.failures.values()) >= 20
    assert stats.kernel_refused > 0 and stats.kernel_inputs == 30


def test_fuzz_restore_cli_run_exit_code_and_one_line_per_failure(tmp_path):
    exe = deblur_exe()
    if exe is None:
        pytest.skip("the deblur console script is not installed in this environment")
    result = fuzz_subprocess(20, seed=7, workdir=tmp_path, exe=exe)
    assert result["problems"] == []
    assert result["exit_code"] == 1 and 0 < result["failed"] < 20
