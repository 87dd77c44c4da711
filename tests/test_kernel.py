"""Kernel files, checks, sums and the noise gain."""

import json
import pickle

import numpy as np
import pytest

from deblur.kernel import (
    Kernel,
    KernelError,
    load_kernel,
    make_kernel,
    save_kernel,
    stability,
)


def test_load_kernel_npy_round_trip(tmp_path):
    k = make_kernel("diagonal", 5)
    path = save_kernel(tmp_path / "k.npy", k)
    back = load_kernel(path)
    np.testing.assert_array_equal(back.weights, k.weights)
    assert back.anchor == "bottom-right"
    meta = json.loads((tmp_path / "k.npy.json").read_text())
    assert meta["anchor"] == "bottom-right"
    assert meta["gain"] == pytest.approx(2.697, abs=1e-3)


def test_load_kernel_text_whitespace_and_commas(tmp_path):
    (tmp_path / "k.txt").write_text("0.1 0.2\n# comment\n0.0 0.7\n")
    (tmp_path / "k.csv").write_text("0.1,0.2\n0.0,0.7\n")
    a = load_kernel(tmp_path / "k.txt").weights
    b = load_kernel(tmp_path / "k.csv").weights
    np.testing.assert_array_equal(a, [[0.1, 0.2], [0.0, 0.7]])
    np.testing.assert_array_equal(a, b)


def test_load_kernel_pickled_npy_refused_without_unpickling(tmp_path):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(KernelError, match=r"pickled array\); refused"):
        load_kernel(path)


def test_load_kernel_pickle_file_named_npy_refused(tmp_path):
    path = tmp_path / "evil.npy"
    path.write_bytes(pickle.dumps([1.0, 2.0]))
    with pytest.raises(KernelError, match="no .npy header: pickled data"):
        load_kernel(path)


@pytest.mark.parametrize(
    "weights, match",
    [
        (np.ones(5), "got 1-D"),
        (np.ones((1, 1, 1, 2, 2)), "got 5-D"),
        (np.zeros((0, 3)), "empty"),
        (np.array([[0.5, np.nan], [0.0, 1.0]]), "NaN or infinite"),
        (np.array([[0.5, np.inf], [0.0, 1.0]]), "NaN or infinite"),
        (np.array([[0.5, 0.5], [0.5, 0.0]]), "anchor tap .* is zero"),
    ],
)
def test_load_kernel_bad_values_refused(tmp_path, weights, match):
    path = tmp_path / "k.npy"
    np.save(path, weights)
    with pytest.raises(KernelError, match=match):
        load_kernel(path)


def test_load_kernel_zero_anchor_hints_the_corner_holding_the_weight(tmp_path):
    path = tmp_path / "k.npy"
    np.save(path, np.array([[1.0, 0.2], [0.1, 0.0]]))
    with pytest.raises(KernelError, match="try --anchor top-left"):
        load_kernel(path)


def test_load_kernel_missing_and_unknown_format(tmp_path):
    with pytest.raises(KernelError, match="not found"):
        load_kernel(tmp_path / "nope.npy")
    (tmp_path / "k.mat").write_text("1")
    with pytest.raises(KernelError, match="use .npy, .txt or .csv"):
        load_kernel(tmp_path / "k.mat")


def test_load_kernel_anchor_disagreeing_with_sidecar_refused(tmp_path):
    path = save_kernel(
        tmp_path / "k.npy",
        make_kernel("diagonal", 3, anchor="top-left").with_anchor("top-left"),
    )
    assert load_kernel(path).anchor == "top-left"
    with pytest.raises(KernelError, match="disagrees with the anchor"):
        load_kernel(path, anchor="bottom-right")


def test_stability_diagonal_kernel_matches_design_gain():
    s = stability(make_kernel("diagonal", 5, ratio=0.6))
    assert s.verdict == "stable"
    assert s.gain == pytest.approx(2.697, abs=1e-3)


def test_stability_centred_gaussian_is_unstable():
    k = make_kernel("gaussian", 5, sigma=1.0)
    assert k.anchor == "center"
    s = stability(k.with_anchor("bottom-right"))
    assert s.verdict == "unstable"
    assert s.gain > 1e10


def test_stability_uniform_motion_is_marginal():
    s = stability(make_kernel("motion", (1, 9), ratio=1.0))
    assert s.verdict == "marginal"


def test_stability_independent_of_anchor_corner():
    a = stability(make_kernel("corner-gaussian", 5, sigma=1.4))
    b = stability(
        make_kernel("corner-gaussian", 5, sigma=1.4, anchor="top-left").with_anchor(
            "top-left"
        )
    )
    assert a.gain == pytest.approx(b.gain, rel=1e-12)


def test_kernel_normalized_per_channel_sums_to_one():
    k = Kernel(np.stack([np.full((2, 2), 0.5), np.full((2, 2), 2.0)]))
    assert k.sums == [2.0, 8.0]
    assert k.normalized().sums == pytest.approx([1.0, 1.0])


def test_make_kernel_unknown_kind_refused():
    with pytest.raises(KernelError, match="unknown kernel kind"):
        make_kernel("box")


def test_load_kernel_garbage_npy_says_cannot_read(tmp_path):
    path = tmp_path / "g.npy"
    path.write_bytes(b"garbage")
    with pytest.raises(KernelError, match="cannot read the .npy file"):
        load_kernel(path)


def test_load_kernel_too_large_refused(tmp_path):
    path = tmp_path / "big.npy"
    w = np.zeros((200, 3))
    w[-1, -1] = 1.0
    np.save(path, w)
    with pytest.raises(KernelError, match="larger than the 129x129"):
        load_kernel(path)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sigma": 0.0}, "sigma must be a positive"),
        ({"ratio": float("nan")}, "ratio must be"),
        ({"size": 100000}, "kernel size must be 1 to 129"),
    ],
)
def test_make_kernel_bad_parameters_refused(kwargs, match):
    with pytest.raises(KernelError, match=match):
        make_kernel("corner-gaussian", **kwargs)
