"""Tests of deblur.imageio: exact round trips, conversions, refusals.

Files are made and checked with the libraries themselves (Pillow, tifffile,
imagecodecs), so a test compares deblur against an independent codec.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import imagecodecs
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image as PILImage

from deblur import imageio
from deblur.imageio import (
    Image,
    ImageError,
    WriteInfo,
    data_range,
    from_tensor,
    read_image,
    to_tensor,
    write_image,
)

H, W = 5, 7
SAMPLES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def _raw(mode, dtype, seed=0):
    """Random stored samples for `mode`, with the extremes at fixed pixels."""
    rng = np.random.default_rng(seed)
    shape = (H, W, SAMPLES[mode])
    if np.dtype(dtype).kind == "f":
        raw = rng.uniform(-0.5, 3.0, shape).astype(dtype)
    else:
        top = np.iinfo(dtype).max
        raw = rng.integers(0, top, shape, endpoint=True, dtype=dtype)
        raw[0, 0], raw[0, 1] = 0, top
        if top > 255:
            raw[0, 2] = [1, 255, 256, 65534][: raw.shape[2]]  # low bytes matter
    return raw[..., 0] if mode == "L" else raw


def _save(path, raw, mode):
    """Write stored samples with a third-party codec, by suffix."""
    suffix = path.suffix
    if suffix == ".png":
        path.write_bytes(imagecodecs.png_encode(raw))
    elif suffix == ".tif":
        tifffile.imwrite(
            path,
            raw,
            photometric="minisblack" if mode.startswith("L") else "rgb",
            planarconfig="contig" if raw.ndim == 3 else None,
            extrasamples=("unassalpha",) if mode.endswith("A") else None,
        )
    else:
        PILImage.fromarray(raw).save(path)


def _load(path):
    """Read stored samples with a third-party codec, by suffix."""
    if path.suffix == ".png":
        return imagecodecs.png_decode(path.read_bytes())
    if path.suffix == ".tif":
        return tifffile.imread(path)
    with PILImage.open(path) as pil:
        return np.asarray(pil)


def _split(raw, mode):
    colour = raw[..., None] if raw.ndim == 2 else raw
    count = 1 if mode.startswith("L") else 3
    alpha = colour[..., count] if mode.endswith("A") else None
    return colour[..., :count], alpha


def _png_header_only(width, height, bit_depth=8, colour_type=0):
    """A PNG whose IHDR claims a size, with one tiny IDAT: a bomb's header."""

    def chunk(kind, body):
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


ROUND_TRIPS = (
    [(".png", mode, dtype) for mode in SAMPLES for dtype in ("uint8", "uint16")]
    + [
        (".tif", mode, dtype)
        for mode in SAMPLES
        for dtype in ("uint8", "uint16", "float32")
    ]
    + [(".bmp", mode, "uint8") for mode in ("L", "RGB")]
)


# ----------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize(("suffix", "mode", "dtype"), ROUND_TRIPS)
def test_read_image_round_trip_exact(tmp_path, suffix, mode, dtype):
    raw = _raw(mode, dtype)
    source = tmp_path / f"in{suffix}"
    _save(source, raw, mode)
    colour, alpha = _split(raw, mode)
    scale = 1.0 if dtype == "float32" else np.iinfo(dtype).max

    image = read_image(source)

    assert (image.mode, image.dtype, image.notes) == (mode, np.dtype(dtype), [])
    assert image.bit_depth == 8 * np.dtype(dtype).itemsize
    assert image.data.dtype == np.float64 and image.data.shape == colour.shape
    np.testing.assert_array_equal(image.data, colour.astype(np.float64) / scale)
    if alpha is None:
        assert image.alpha is None
    else:
        assert image.alpha.dtype == alpha.dtype
        np.testing.assert_array_equal(image.alpha, alpha)

    target = tmp_path / f"out{suffix}"
    info = write_image(target, image.data, like=image)

    assert info == WriteInfo(
        target, image.format, mode, image.bit_depth, 0, colour.size, 0
    )
    written = _load(target)
    assert written.dtype == raw.dtype
    np.testing.assert_array_equal(written, raw)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [source.name, target.name]
    )


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_read_image_jpeg_matches_pillow_decode(tmp_path, mode):
    raw = _raw(mode, "uint8")
    source = tmp_path / "in.jpg"
    PILImage.fromarray(raw).save(source, quality=90)
    with PILImage.open(source) as pil:
        decoded = np.asarray(pil)

    image = read_image(source)
    info = write_image(tmp_path / "out.jpeg", image.data, like=image)

    assert (image.format, image.mode, image.bit_depth) == ("JPEG", mode, 8)
    np.testing.assert_array_equal(
        image.data, _split(decoded, mode)[0].astype(np.float64) / 255
    )
    again = read_image(info.path)
    assert again.mode == mode
    assert np.abs(again.data - image.data).mean() < 4 / 255


def test_read_image_png16_rgb_keeps_low_byte(tmp_path):
    raw = np.array([[[1, 255, 256], [257, 4095, 65534]]], dtype=np.uint16)
    source = tmp_path / "sixteen.png"
    source.write_bytes(imagecodecs.png_encode(raw))
    with PILImage.open(source) as pil:
        pillow_view = np.asarray(pil)  # why the 16-bit path exists

    image = read_image(source)

    assert pillow_view.dtype == np.uint8
    np.testing.assert_array_equal(np.rint(image.data * 65535), raw)
    assert (image.mode, image.bit_depth) == ("RGB", 16)


def test_read_image_png16_gray_written_by_pillow(tmp_path):
    raw = np.array([[0, 1, 300], [40000, 65534, 65535]], dtype=np.uint16)
    source = tmp_path / "gray16.png"
    PILImage.fromarray(raw).save(source)

    image = read_image(source)

    assert (image.mode, image.dtype) == ("L", np.uint16)
    np.testing.assert_array_equal(image.data[..., 0], raw / 65535)


def test_write_image_png16_readable_by_pillow_gray(tmp_path):
    image = Image(np.array([[[0.0], [1.0]]]), None, np.uint16, "L", 16)

    write_image(tmp_path / "g.png", image.data, like=image)

    with PILImage.open(tmp_path / "g.png") as pil:
        assert pil.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(pil), [[0, 65535]])


# ----------------------------------------------------------------------------
# exact values


def test_read_image_uint8_scaled_by_255_not_by_data(tmp_path):
    raw = np.array([[0, 1], [128, 2]], dtype=np.uint8)
    PILImage.fromarray(raw).save(tmp_path / "dark.png")

    image = read_image(tmp_path / "dark.png")

    np.testing.assert_array_equal(image.data[..., 0], raw / 255)
    assert image.data.max() == 128 / 255
    assert data_range(image) == 255


def test_read_image_uint8_white_reads_one(tmp_path):
    PILImage.new("RGB", (3, 2), (255, 255, 255)).save(tmp_path / "white.bmp")

    image = read_image(tmp_path / "white.bmp")

    assert image.data.min() == 1.0 and image.data.max() == 1.0


def test_read_image_uint16_max_reads_one_small_values_kept(tmp_path):
    raw = np.array([[65535, 1000]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", raw)

    image = read_image(tmp_path / "a.tif")

    assert image.data[0, 0, 0] == 1.0
    assert image.data[0, 1, 0] == 1000 / 65535
    assert data_range(image) == 65535


def test_read_image_float32_tiff_range_not_guessed(tmp_path):
    raw = np.array([[-0.5, 0.0, 2.5, 1000.0]], dtype=np.float32)
    tifffile.imwrite(tmp_path / "f.tif", raw)

    image = read_image(tmp_path / "f.tif")

    np.testing.assert_array_equal(image.data[..., 0], raw)
    assert (image.dtype, image.bit_depth, data_range(image)) == (
        np.float32,
        32,
        1.0,
    )


def test_write_image_float32_keeps_values_above_one(tmp_path):
    like = Image(np.zeros((1, 3, 1)), None, np.float32, "L", 32)
    data = np.array([[[-0.25], [1.5], [np.inf]]])

    info = write_image(tmp_path / "f.tiff", data, like=like)

    assert (info.clipped, info.nonfinite, info.bit_depth) == (0, 1, 32)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "f.tiff"), data[..., 0])


def test_write_image_clipping_counted_and_rounded(tmp_path):
    like = Image(np.zeros((1, 6, 1)), None, np.uint8, "L", 8)
    data = np.array([-0.2, 1.3, 100.4 / 255, 100.6 / 255, -np.inf, 1.0])

    info = write_image(tmp_path / "c.png", data.reshape(1, 6, 1), like=like)

    assert (info.clipped, info.total) == (3, 6)
    assert info.clipped_fraction == 0.5
    np.testing.assert_array_equal(
        _load(tmp_path / "c.png"), [[0, 255, 100, 101, 0, 255]]
    )


def test_write_image_nan_integer_output_refused(tmp_path):
    like = Image(np.zeros((1, 2, 1)), None, np.uint8, "L", 8)

    with pytest.raises(ValueError, match="1 of 2 values are NaN"):
        write_image(tmp_path / "n.png", np.array([[[np.nan], [0.5]]]), like=like)

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("source", "target", "alpha_in", "alpha_out"),
    [
        (8, 16, np.array([0, 1, 128, 255], np.uint8), [0, 257, 32896, 65535]),
        (16, 8, np.array([0, 257, 32767, 65535], np.uint16), [0, 1, 127, 255]),
        (8, "float32", np.array([0, 51, 255, 255], np.uint8), [0.0, 0.2, 1.0, 1.0]),
        (32, 16, np.array([0, 0.5, 1, 2], np.float32), [0, 32768, 65535, 65535]),
    ],
)
def test_write_image_other_depth_rescales_alpha(
    tmp_path, source, target, alpha_in, alpha_out
):
    dtype = {8: np.uint8, 16: np.uint16, 32: np.float32}[source]
    like = Image(np.full((1, 4, 3), 0.5), alpha_in[None], dtype, "RGBA", source)

    info = write_image(tmp_path / "a.tif", like.data, like=like, bit_depth=target)

    written = tifffile.imread(tmp_path / "a.tif")
    np.testing.assert_allclose(written[0, :, 3], alpha_out, rtol=1e-7)
    assert info.mode == "RGBA"
    if target == 16:
        assert written.dtype == np.uint16 and written[0, 0, 0] == 32768


def test_write_image_explicit_depth_16_from_8bit(tmp_path):
    like = Image(np.array([[[128 / 255]]]), None, np.uint8, "L", 8)

    info = write_image(tmp_path / "up.png", like.data, like=like, bit_depth=16)

    assert info.bit_depth == 16
    np.testing.assert_array_equal(_load(tmp_path / "up.png"), [[32896]])


# ----------------------------------------------------------------------------
# conversions, each with a note


def test_read_image_palette_png_converted_to_rgb(tmp_path):
    rgb = _raw("RGB", "uint8")
    PILImage.fromarray(rgb).quantize(8).save(tmp_path / "p.png")
    with PILImage.open(tmp_path / "p.png") as pil:
        expected = np.asarray(pil.convert("RGB")) / 255

    image = read_image(tmp_path / "p.png")

    assert image.mode == "RGB"
    assert image.notes == ["palette image converted to RGB"]
    np.testing.assert_array_equal(image.data, expected)


def test_read_image_palette_with_transparency_converted_to_rgba(tmp_path):
    pil = PILImage.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    pil.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    pil.save(tmp_path / "t.png", transparency=1)

    image = read_image(tmp_path / "t.png")

    assert (image.mode, image.notes) == ("RGBA", ["palette image converted to RGBA"])
    np.testing.assert_array_equal(image.alpha, [[255, 0], [255, 0]])
    np.testing.assert_array_equal(image.data[0, 0], [1.0, 0.0, 0.0])


def test_read_image_gray_transparent_colour_becomes_alpha(tmp_path):
    PILImage.fromarray(np.array([[0, 10, 20]], np.uint8)).save(
        tmp_path / "k.png", transparency=10
    )

    image = read_image(tmp_path / "k.png")

    assert image.mode == "LA"
    assert "tRNS" in image.notes[0]
    np.testing.assert_array_equal(image.alpha, [[255, 0, 255]])


def test_read_image_one_bit_png_read_as_gray(tmp_path):
    bits = np.array([[True, False, True]])
    PILImage.fromarray(bits).save(tmp_path / "b.png")

    image = read_image(tmp_path / "b.png")

    assert (image.mode, image.bit_depth) == ("L", 8)
    assert image.notes == ["1-bit image read as 8-bit gray"]
    np.testing.assert_array_equal(image.data[..., 0], [[1.0, 0.0, 1.0]])


def test_read_image_one_bit_tiff_read_as_gray(tmp_path):
    bits = np.array([[True, False], [False, True]])
    PILImage.fromarray(bits).save(tmp_path / "b.tif")

    image = read_image(tmp_path / "b.tif")

    assert (image.mode, image.dtype) == ("L", np.uint8)
    assert "1-bit image read as 8-bit gray" in image.notes
    np.testing.assert_array_equal(image.data[..., 0], bits.astype(float))


def test_read_image_cmyk_jpeg_converted_to_rgb(tmp_path):
    PILImage.new("CMYK", (4, 3), (0, 255, 255, 0)).save(tmp_path / "c.jpg")

    image = read_image(tmp_path / "c.jpg")

    assert image.mode == "RGB"
    assert image.notes == ["CMYK converted to RGB (no colour profile)"]
    np.testing.assert_allclose(image.data[0, 0], [1.0, 0.0, 0.0], atol=3 / 255)


def test_read_image_cmyk_tiff_converted_to_rgb(tmp_path):
    cmyk = np.array([[[0, 255, 255, 0], [0, 0, 0, 128]]], np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", cmyk, photometric="separated")

    image = read_image(tmp_path / "c.tif")

    assert (image.mode, image.dtype) == ("RGB", np.uint8)
    assert "CMYK converted to RGB (no colour profile)" in image.notes
    np.testing.assert_array_equal(image.data[0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(image.data[0, 1], [127 / 255] * 3)


def test_read_image_palette_tiff_converted_to_rgb(tmp_path):
    rgb = _raw("RGB", "uint8")
    pil = PILImage.fromarray(rgb).quantize(4)
    pil.save(tmp_path / "p.tif")

    image = read_image(tmp_path / "p.tif")

    assert (image.mode, image.dtype) == ("RGB", np.uint8)
    assert "palette image converted to RGB" in image.notes
    np.testing.assert_array_equal(image.data, np.asarray(pil.convert("RGB")) / 255)


def test_read_image_min_is_white_tiff_inverted(tmp_path):
    tifffile.imwrite(
        tmp_path / "w.tif", np.array([[0, 55]], np.uint8), photometric="miniswhite"
    )

    image = read_image(tmp_path / "w.tif")

    assert "min-is-white gray inverted to min-is-black" in image.notes
    np.testing.assert_array_equal(image.data[..., 0], [[1.0, 200 / 255]])


def test_read_image_float64_tiff_read_as_float32(tmp_path):
    tifffile.imwrite(tmp_path / "d.tif", np.array([[0.25, 7.0]]))

    image = read_image(tmp_path / "d.tif")

    assert (image.dtype, image.bit_depth) == (np.float32, 32)
    assert image.notes == ["float64 samples read as float32"]
    np.testing.assert_array_equal(image.data[..., 0], [[0.25, 7.0]])


def test_read_image_mpo_reads_primary_image(tmp_path):
    primary = PILImage.new("RGB", (4, 3), (250, 0, 0))
    primary.save(
        tmp_path / "m.jpg",
        "MPO",
        save_all=True,
        append_images=[PILImage.new("RGB", (4, 3), (0, 0, 250))],
    )

    image = read_image(tmp_path / "m.jpg")

    assert image.format == "JPEG"
    assert image.notes == [
        "MPO file: read the primary image, 1 secondary image(s) ignored"
    ]
    assert image.data[0, 0, 0] > 0.9


def test_read_image_exif_orientation_noted_not_applied(tmp_path):
    exif = PILImage.Exif()
    exif[0x0112] = 6
    PILImage.new("L", (4, 2), 9).save(tmp_path / "o.jpg", exif=exif)

    image = read_image(tmp_path / "o.jpg")

    assert image.data.shape == (2, 4, 1)
    assert image.notes == [
        "EXIF orientation 6 not applied; pixels kept in stored order"
    ]


# ----------------------------------------------------------------------------
# refusals: one line naming the file, the problem, what to do


def _refused(path, match, **kwargs):
    with pytest.raises(ImageError, match=match) as caught:
        read_image(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    return caught.value


def test_read_image_missing_file_refused(tmp_path):
    _refused(tmp_path / "nope.png", "no such file; check the path")


def test_read_image_folder_refused(tmp_path):
    _refused(tmp_path, "is a folder, not an image file")


def test_read_image_empty_file_refused(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")

    _refused(tmp_path / "empty.png", r"file is empty \(0 bytes\)")


def test_read_image_text_named_png_refused(tmp_path):
    (tmp_path / "notes.png").write_text("not really a picture\n")

    error = _refused(tmp_path / "notes.png", "not a PNG, JPEG, TIFF or BMP image")
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("suffix", "mode", "dtype", "label"),
    [
        (".png", "RGB", "uint8", "PNG"),
        (".png", "RGB", "uint16", "PNG"),
        (".tif", "RGB", "uint16", "TIFF"),
        (".bmp", "RGB", "uint8", "BMP"),
    ],
)
def test_read_image_truncated_file_refused(tmp_path, suffix, mode, dtype, label):
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 255, (64, 64, 3)).astype(dtype)
    full = tmp_path / f"full{suffix}"
    _save(full, raw, mode)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])

    _refused(cut, f"truncated or corrupt {label} file")


def test_read_image_truncated_jpeg_refused(tmp_path):
    rng = np.random.default_rng(2)
    PILImage.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "full.jpg"
    )
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])

    _refused(tmp_path / "cut.jpg", "truncated or corrupt JPEG file")


def test_read_image_corrupt_png_checksum_refused(tmp_path):
    PILImage.fromarray(_raw("RGB", "uint8")).save(tmp_path / "ok.png")
    data = bytearray((tmp_path / "ok.png").read_bytes())
    data[-20] ^= 0xFF  # inside the IDAT chunk, so its CRC no longer matches
    (tmp_path / "bad.png").write_bytes(bytes(data))

    _refused(tmp_path / "bad.png", "truncated or corrupt PNG file")


def test_read_image_decompression_bomb_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(100_000, 100_000))

    _refused(
        bomb,
        r"100000x100000 = 10000000000 pixels exceeds the limit of 67108864 "
        r"pixels .* pass --max-pixels 10000000000",
    )


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_read_image_over_max_pixels_refused_raised_limit_reads(tmp_path, suffix):
    path = tmp_path / f"img{suffix}"
    _save(path, _raw("L", "uint8"), "L")

    _refused(path, "7x5 = 35 pixels exceeds the limit of 34 pixels", max_pixels=34)
    assert read_image(path, max_pixels=35).data.shape == (H, W, 1)
    assert read_image(path, max_pixels=None).data.shape == (H, W, 1)


def test_read_image_pillow_limit_restored_after_read(tmp_path):
    before = PILImage.MAX_IMAGE_PIXELS
    PILImage.fromarray(_raw("L", "uint8")).save(tmp_path / "a.png")

    read_image(tmp_path / "a.png")

    assert PILImage.MAX_IMAGE_PIXELS == before


def test_read_image_animated_png_refused(tmp_path):
    frames = [PILImage.new("RGB", (4, 3), (i, 0, 0)) for i in (0, 100, 200)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])

    _refused(tmp_path / "anim.png", "PNG file has 3 frames; deblur reads single-image")


def test_read_image_multipage_tiff_refused(tmp_path):
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        tif.write(np.zeros((3, 4), np.uint8))
        tif.write(np.ones((3, 4), np.uint8))

    _refused(tmp_path / "pages.tif", "TIFF file has 2 pages; .* save the page you want")


def test_read_image_gif_refused(tmp_path):
    PILImage.new("L", (4, 3)).save(tmp_path / "a.gif")

    _refused(tmp_path / "a.gif", "GIF images are not supported")


@pytest.mark.parametrize("dtype", ["int16", "uint32", "int8"])
def test_read_image_tiff_unsupported_samples_refused(tmp_path, dtype):
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((3, 4), dtype))

    _refused(tmp_path / "s.tif", "unsupported TIFF samples")


def test_read_image_tiff_unsupported_photometric_refused(tmp_path):
    tifffile.imwrite(
        tmp_path / "lab.tif", np.zeros((3, 4, 3), np.uint8), photometric="cielab"
    )

    _refused(tmp_path / "lab.tif", "unsupported TIFF photometric interpretation CIELAB")


def test_read_image_tiff_two_extra_samples_refused(tmp_path):
    tifffile.imwrite(
        tmp_path / "x.tif",
        np.zeros((3, 4, 5), np.uint8),
        photometric="rgb",
        planarconfig="contig",
        extrasamples=("unassalpha", "unspecified"),
    )

    _refused(tmp_path / "x.tif", "TIFF has 5 samples per pixel for RGB")


def test_read_image_pillow_error_chained_not_leaked(tmp_path):
    (tmp_path / "bad.bmp").write_bytes(b"BM" + b"\x00" * 40)

    error = _refused(tmp_path / "bad.bmp", "truncated or corrupt BMP file")
    assert error.__cause__ is not None


# ----------------------------------------------------------------------------
# write_image refusals


@pytest.fixture
def rgba8():
    return Image(
        np.full((2, 2, 3), 0.5), np.full((2, 2), 200, np.uint8), np.uint8, "RGBA", 8
    )


@pytest.fixture
def rgb16():
    return Image(np.full((2, 2, 3), 0.5), None, np.uint16, "RGB", 16)


def test_write_image_float32_png_refused(tmp_path, rgb16):
    with pytest.raises(ValueError, match=r"float32 output \(bit_depth\) needs a .tif"):
        write_image(tmp_path / "f.png", rgb16.data, like=rgb16, bit_depth="float32")


def test_write_image_same_float32_to_png_refused(tmp_path):
    like = Image(np.zeros((1, 1, 1)), None, np.float32, "L", 32)

    with pytest.raises(ValueError, match=r"float32 output \(the input's depth\)"):
        write_image(tmp_path / "f.png", like.data, like=like)


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_write_image_16bit_to_8bit_format_refused(tmp_path, rgb16, suffix):
    with pytest.raises(ValueError, match="stores 8-bit samples only, asked for 16-bit"):
        write_image(tmp_path / f"o{suffix}", rgb16.data, like=rgb16)

    assert write_image(tmp_path / f"o{suffix}", rgb16.data, rgb16, 8).bit_depth == 8


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_write_image_alpha_to_jpeg_or_bmp_refused(tmp_path, rgba8, suffix):
    with pytest.raises(ValueError, match="cannot store the alpha channel"):
        write_image(tmp_path / f"o{suffix}", rgba8.data, like=rgba8)

    assert list(tmp_path.iterdir()) == []


def test_write_image_unknown_suffix_refused(tmp_path, rgb16):
    with pytest.raises(ValueError, match=r"from its suffix '.webp'; use one of .png"):
        write_image(tmp_path / "o.webp", rgb16.data, like=rgb16)


@pytest.mark.parametrize("bad", [12, "float64", None, 32])
def test_write_image_bad_bit_depth_refused(tmp_path, rgb16, bad):
    with pytest.raises(
        ValueError, match="bit_depth must be 'same', 8, 16 or 'float32'"
    ):
        write_image(tmp_path / "o.png", rgb16.data, like=rgb16, bit_depth=bad)


def test_write_image_wrong_channels_refused(tmp_path, rgb16):
    with pytest.raises(ValueError, match=r"must be \(H, W, 3\), got shape \(2, 2, 1\)"):
        write_image(tmp_path / "o.png", np.zeros((2, 2, 1)), like=rgb16)


def test_write_image_size_not_fitting_alpha_refused(tmp_path, rgba8):
    with pytest.raises(ValueError, match="does not fit the alpha channel"):
        write_image(tmp_path / "o.png", np.zeros((3, 2, 3)), like=rgba8)


def test_write_image_onto_input_refused(tmp_path):
    PILImage.new("L", (2, 2), 7).save(tmp_path / "in.png")
    image = read_image(tmp_path / "in.png")

    with pytest.raises(ValueError, match="refusing to overwrite the input image"):
        write_image(tmp_path / "in.png", image.data * 0, like=image)

    assert read_image(tmp_path / "in.png").data[0, 0, 0] == 7 / 255


def test_write_image_no_overwrite_existing_refused(tmp_path, rgb16):
    (tmp_path / "o.png").write_bytes(b"keep")

    with pytest.raises(FileExistsError, match="already exists"):
        write_image(tmp_path / "o.png", rgb16.data, like=rgb16, overwrite=False)

    assert (tmp_path / "o.png").read_bytes() == b"keep"


def test_write_image_encoder_fails_leaves_nothing(tmp_path, rgb16, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(imageio.imagecodecs, "png_encode", broken)

    with pytest.raises(RuntimeError, match="encoder exploded"):
        write_image(tmp_path / "o.png", rgb16.data, like=rgb16)

    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------
# the Image value and the torch helpers


def test_image_mode_without_alpha_refused():
    with pytest.raises(ValueError, match="mode 'RGBA' with alpha absent is not valid"):
        Image(np.zeros((2, 2, 3)), None, np.uint8, "RGBA", 8)


def test_image_depth_dtype_mismatch_refused():
    with pytest.raises(ValueError, match="bit_depth 8 does not match dtype uint16"):
        Image(np.zeros((2, 2, 1)), None, np.uint16, "L", 8)


def test_image_channels_mode_mismatch_refused():
    with pytest.raises(ValueError, match=r"mode 'L' needs 1 colour channel"):
        Image(np.zeros((2, 2, 3)), None, np.uint8, "L", 8)


def test_image_replace_alpha_dropped_is_valid(rgba8):
    rgb = dataclasses.replace(rgba8, alpha=None, mode="RGB")

    assert (rgb.mode, rgb.channels, rgb.height, rgb.width) == ("RGB", 3, 2, 2)
    assert "2x2 RGB 8-bit uint8" in repr(rgb)


def test_to_tensor_from_tensor_round_trip():
    data = np.arange(2 * 3 * 3, dtype=np.float64).reshape(2, 3, 3)

    tensor = to_tensor(data)

    assert tensor.shape == (1, 3, 2, 3) and tensor.dtype == torch.float64
    assert tensor[0, 2, 1, 0] == data[1, 0, 2]
    np.testing.assert_array_equal(from_tensor(tensor), data)
    assert to_tensor(data[..., 0], dtype=torch.float32).shape == (1, 1, 2, 3)


def test_from_tensor_batch_refused():
    with pytest.raises(ValueError, match="takes one image, got a batch"):
        from_tensor(torch.zeros(2, 3, 4, 4))


def test_from_tensor_requires_grad_detached():
    tensor = torch.ones(1, 1, 2, 2, requires_grad=True) * 0.5

    np.testing.assert_array_equal(from_tensor(tensor), np.full((2, 2, 1), 0.5))


def test_data_range_float_image_is_one():
    image = Image(np.zeros((1, 1, 1)), None, np.float32, "L", 32)

    assert data_range(image) == 1.0


def test_read_image_path_as_str(tmp_path):
    PILImage.new("L", (2, 2), 255).save(tmp_path / "s.png")

    image = read_image(str(tmp_path / "s.png"))

    assert image.path == tmp_path / "s.png"


@pytest.mark.parametrize(
    "options",
    [
        {"compression": "lzw"},
        {"compression": "zlib"},
        {"planarconfig": "separate"},
    ],
)
def test_read_image_tiff_compressed_or_planar_exact(tmp_path, options):
    raw = _raw("RGB", "uint16")
    stored = np.moveaxis(raw, -1, 0) if "planarconfig" in options else raw
    tifffile.imwrite(tmp_path / "c.tif", stored, photometric="rgb", **options)

    image = read_image(tmp_path / "c.tif")

    assert (image.mode, image.dtype, image.notes) == ("RGB", np.uint16, [])
    np.testing.assert_array_equal(image.data, raw / 65535)


def test_read_image_jpeg_compressed_tiff_read_as_rgb(tmp_path):
    raw = np.empty((16, 16, 3), np.uint8)
    raw[...] = (200, 30, 90)
    tifffile.imwrite(tmp_path / "j.tif", raw, photometric="rgb", compression="jpeg")

    image = read_image(tmp_path / "j.tif")

    assert image.mode == "RGB"
    np.testing.assert_allclose(image.data * 255, raw, atol=2)
