"""Finding inputs, mirroring outputs and pairing references."""

from pathlib import Path

import pytest

from deblur.paths import PathError, ReferenceIndex, find_images, output_path, pair_files


def _touch(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_find_images_folder_recursive_keeps_relative_names(tmp_path):
    _touch(tmp_path / "in" / "a" / "x.png")
    _touch(tmp_path / "in" / "y.tif")
    _touch(tmp_path / "in" / "notes.txt")
    _touch(tmp_path / "in" / ".hidden.png")
    names = sorted(str(s.relative) for s in find_images([tmp_path / "in"]))
    assert names == ["a/x.png", "y.tif"]


def test_find_images_glob_relative_to_its_fixed_prefix(tmp_path):
    _touch(tmp_path / "in" / "a" / "x.png")
    _touch(tmp_path / "in" / "b" / "y.png")
    found = find_images([str(tmp_path / "in" / "*" / "*.png")])
    assert sorted(str(s.relative) for s in found) == ["a/x.png", "b/y.png"]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "missing.png", "no such file or folder"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "holds no images"),
        (lambda p: str(p / "*.png"), "matches no image files"),
    ],
)
def test_find_images_bad_inputs_refused(tmp_path, make, match):
    with pytest.raises(PathError, match=match):
        find_images([make(tmp_path)])


def test_find_images_two_inputs_with_one_output_name_refused(tmp_path):
    a = _touch(tmp_path / "a" / "x.png")
    b = _touch(tmp_path / "b" / "x.png")
    with pytest.raises(PathError, match="would both be written as x.png"):
        find_images([a, b])


def test_output_path_mirrors_layout(tmp_path):
    (src,) = find_images([_touch(tmp_path / "in" / "a" / "x.png").parent.parent])
    assert output_path(src, tmp_path / "out") == tmp_path / "out" / "a" / "x.png"
    assert output_path(src, tmp_path / "out", ".tif").name == "x.tif"


def test_reference_index_matches_relative_path_ignoring_extension(tmp_path):
    _touch(tmp_path / "blurred" / "a" / "x.tif")
    _touch(tmp_path / "sharp" / "a" / "x.png")
    _touch(tmp_path / "sharp" / "b" / "x.png")
    (src,) = find_images([tmp_path / "blurred"])
    ref, why = ReferenceIndex(tmp_path / "sharp").find(src)
    assert ref == tmp_path / "sharp" / "a" / "x.png" and why is None


def test_reference_index_falls_back_to_unique_suffix(tmp_path):
    _touch(tmp_path / "blurred" / "8bit" / "cat.png")
    _touch(tmp_path / "sharp" / "cat.png")
    (src,) = find_images([tmp_path / "blurred"])
    ref, _ = ReferenceIndex(tmp_path / "sharp").find(src)
    assert ref == tmp_path / "sharp" / "cat.png"


def test_reference_index_missing_reference_says_why(tmp_path):
    _touch(tmp_path / "blurred" / "dog.png")
    _touch(tmp_path / "sharp" / "cat.png")
    (src,) = find_images([tmp_path / "blurred"])
    ref, why = ReferenceIndex(tmp_path / "sharp").find(src)
    assert ref is None and "no reference named dog" in why


def test_pair_files_unmatched_names_listed(tmp_path):
    _touch(tmp_path / "blurred" / "dog.png")
    _touch(tmp_path / "blurred" / "cat.png")
    _touch(tmp_path / "sharp" / "cat.png")
    with pytest.raises(PathError, match="1 blurred image.*no sharp partner.*dog"):
        pair_files(tmp_path / "blurred", tmp_path / "sharp")


def test_reference_index_prefers_exact_name_among_several_extensions(tmp_path):
    _touch(tmp_path / "blurred" / "x.bmp")
    _touch(tmp_path / "sharp" / "x.bmp")
    _touch(tmp_path / "sharp" / "x.jpg")
    (src,) = find_images([tmp_path / "blurred"])
    ref, why = ReferenceIndex(tmp_path / "sharp").find(src)
    assert ref == tmp_path / "sharp" / "x.bmp" and why is None


def test_reference_index_ambiguous_without_exact_name(tmp_path):
    _touch(tmp_path / "blurred" / "x.png")
    _touch(tmp_path / "sharp" / "x.bmp")
    _touch(tmp_path / "sharp" / "x.jpg")
    (src,) = find_images([tmp_path / "blurred"])
    ref, why = ReferenceIndex(tmp_path / "sharp").find(src)
    assert ref is None and "several references match x" in why
