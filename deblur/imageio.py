"""Read and write images as floating-point arrays, keeping depth, mode and alpha.

An :class:`Image` holds the colour channels as a float64 ``(H, W, C)`` array
(``C`` is 1 or 3) and remembers how they were stored, so that
:func:`write_image` can store a restored image the way the input was stored:
same mode, same bit depth, the alpha channel passed through untouched.

Integer samples are scaled by their type's maximum (255 for 8 bits, 65535 for
16 bits), never by the range found in the data; float samples are taken as
they are.

Examples
--------
>>> import tempfile
>>> import numpy as np
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> image = Image(np.full((2, 3, 3), 0.5), None, np.dtype("uint16"), "RGB", 16)
>>> info = write_image(folder / "half.png", image.data, like=image)
>>> again = read_image(folder / "half.png")
>>> again.mode, again.bit_depth, float(again.data[0, 0, 0]) * 65535
('RGB', 16, 32768.0)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import imagecodecs
import numpy as np
import tifffile
import torch
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from .atomic import atomic_path

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "READ_FORMATS",
    "WRITE_SUFFIXES",
    "Image",
    "ImageError",
    "WriteInfo",
    "data_range",
    "from_tensor",
    "read_image",
    "to_tensor",
    "write_image",
]

#: Largest image :func:`read_image` accepts unless told otherwise: 8192 x 8192
#: (about 67 megapixels), about 1.6 GB as a float64 RGB array.
DEFAULT_MAX_PIXELS = 8192 * 8192

#: Formats :func:`read_image` recognises (by content, not by name).
READ_FORMATS = ("PNG", "JPEG", "TIFF", "BMP")

#: Output format for each file suffix :func:`write_image` accepts.
WRITE_SUFFIXES = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}

BitDepth = Literal["same", 8, 16, "float32"]

_MODES = {("L", False): 1, ("LA", True): 1, ("RGB", False): 3, ("RGBA", True): 3}
_DEPTH_DTYPES = {
    8: np.dtype(np.uint8),
    16: np.dtype(np.uint16),
    32: np.dtype(np.float32),
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_HEAD_SIZE = 32

# Pillow keeps its own pixel limit in a module global; read_image enforces
# `max_pixels` itself and lifts Pillow's limit while it opens a file.
_PIL_LIMIT_LOCK = threading.Lock()

# JPEG is written at high quality and without chroma subsampling: a restored
# image should not lose to the encoder what the inverse recovered.
_JPEG_OPTIONS = {"quality": 95, "subsampling": 0}


class ImageError(ValueError):
    """An image file that cannot be read, with the file and the reason in one line."""


@dataclass(eq=False, repr=False)
class Image:
    """An image's colour channels as floats, and how they were stored.

    Parameters
    ----------
    data : (H, W, C) ndarray of float64
        The colour channels, ``C`` is 1 (gray) or 3 (RGB). Integer samples
        are divided by their type's maximum, so they lie in ``[0, 1]``; float
        samples are as stored (any range).
    alpha : (H, W) ndarray or None
        The alpha channel in its stored dtype, or None.
    dtype : numpy dtype
        The stored sample type: ``uint8``, ``uint16`` or ``float32``.
    mode : {"L", "LA", "RGB", "RGBA"}
        Gray or RGB, with or without alpha.
    bit_depth : {8, 16, 32}
        Bits per sample; 32 means float32.
    path : Path or None
        The file the image was read from.
    format : str
        ``"PNG"``, ``"JPEG"``, ``"TIFF"``, ``"BMP"``, or ``""`` if not read.
    notes : list of str
        Conversions done while reading, e.g. ``"palette image converted to
        RGB"``; empty when the file was read as stored.
    """

    data: np.ndarray
    alpha: np.ndarray | None
    dtype: np.dtype
    mode: str
    bit_depth: int
    path: Path | None = None
    format: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dtype = np.dtype(self.dtype)
        if self.data.ndim != 3:
            raise ValueError(
                f"Image data must be (H, W, C), got shape {self.data.shape}; "
                "add a channel axis with data[..., None]"
            )
        expected = _MODES.get((self.mode, self.alpha is not None))
        if expected is None:
            raise ValueError(
                f"Image mode {self.mode!r} with alpha "
                f"{'present' if self.alpha is not None else 'absent'} is not valid; "
                "use 'L' or 'RGB' without alpha, 'LA' or 'RGBA' with it"
            )
        if self.data.shape[2] != expected:
            raise ValueError(
                f"Image mode {self.mode!r} needs {expected} colour channel(s), "
                f"got data of shape {self.data.shape}"
            )
        if self.alpha is not None and self.alpha.shape != self.data.shape[:2]:
            raise ValueError(
                f"Image alpha must be (H, W) = {self.data.shape[:2]}, "
                f"got shape {self.alpha.shape}"
            )
        if _DEPTH_DTYPES.get(self.bit_depth) != self.dtype:
            raise ValueError(
                f"Image bit_depth {self.bit_depth} does not match dtype "
                f"{self.dtype}; use 8 with uint8, 16 with uint16, 32 with float32"
            )

    @property
    def height(self) -> int:
        """Number of rows ``H``."""
        return self.data.shape[0]

    @property
    def width(self) -> int:
        """Number of columns ``W``."""
        return self.data.shape[1]

    @property
    def channels(self) -> int:
        """Number of colour channels ``C`` (alpha not counted)."""
        return self.data.shape[2]

    def __repr__(self) -> str:
        return (
            f"Image({self.width}x{self.height} {self.mode} {self.bit_depth}-bit "
            f"{self.dtype}, format={self.format!r}, path={self.path!r}, "
            f"notes={self.notes!r})"
        )


@dataclass(frozen=True)
class WriteInfo:
    """What :func:`write_image` wrote.

    Attributes
    ----------
    path : Path
        The file written.
    format : str
        ``"PNG"``, ``"JPEG"``, ``"TIFF"`` or ``"BMP"``.
    mode : str
        ``"L"``, ``"LA"``, ``"RGB"`` or ``"RGBA"``.
    bit_depth : int
        8, 16, or 32 (float32).
    clipped : int
        Colour values outside ``[0, 1]`` that were clipped (integer outputs
        only; always 0 for float32).
    total : int
        Number of colour values, ``H * W * C``.
    nonfinite : int
        NaN or infinite colour values written as they are (float32 outputs
        only; integer outputs refuse NaN and clip infinities).
    """

    path: Path
    format: str
    mode: str
    bit_depth: int
    clipped: int
    total: int
    nonfinite: int = 0

    @property
    def clipped_fraction(self) -> float:
        """``clipped / total``, 0.0 for an empty image."""
        return self.clipped / self.total if self.total else 0.0


def data_range(image: Image) -> int | float:
    """Return the range of the stored samples: 255, 65535, or 1.0 for float.

    This is the value to record in a report next to PSNR and SSIM. The
    metrics themselves, computed on :attr:`Image.data` (already divided by
    this maximum), take ``data_range=1.0``: PSNR on the scaled data with
    range 1 equals PSNR on the raw integers with range 255 or 65535.

    Parameters
    ----------
    image : Image

    Returns
    -------
    data_range : int or float
        ``2**bit_depth - 1`` for integer samples, 1.0 for float samples.
    """
    if image.dtype.kind == "u":
        return int(np.iinfo(image.dtype).max)
    return 1.0


# ----------------------------------------------------------------------------
# reading


def read_image(
    path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image:
    """Read a PNG, JPEG, TIFF or BMP file into an :class:`Image`.

    Parameters
    ----------
    path : str or path-like
        The file. Its format is recognised by content, not by its suffix.
    max_pixels : int or None, default DEFAULT_MAX_PIXELS
        Refuse images with more pixels (``H * W``) than this, before decoding
        them: a guard against decompression bombs. None disables the check.

    Returns
    -------
    image : Image
        Colour channels as float64 ``(H, W, C)``, alpha in its stored dtype.

    Raises
    ------
    ImageError
        One line naming the file, the problem and what to do: the file is
        missing, empty, truncated or corrupt, not an image, larger than
        `max_pixels`, has several frames or pages, or stores samples of a
        kind deblur does not handle.

    Notes
    -----
    Supported as stored: gray, gray + alpha, RGB and RGBA, 8 and 16 bits per
    sample (PNG, TIFF), 8 bits (JPEG, BMP), and float32 TIFF. Converted, with
    a note in :attr:`Image.notes`: palette images to RGB or RGBA, 1-bit images
    to 8-bit gray, CMYK to RGB (a plain formula, no colour profile),
    min-is-white TIFF to min-is-black, a PNG transparent colour (``tRNS``) to
    an alpha channel, float16 or float64 TIFF to float32.

    Refused: files with more than one frame or page (animated PNG, multi-page
    TIFF); extract the frame wanted into its own file first. A JPEG with
    secondary images (MPO, as some cameras write) is read as its primary
    image, with a note.

    Pixels are kept in their stored order: an EXIF orientation tag is not
    applied (a note says so), because the blur happened in that order.
    Embedded colour profiles and other metadata are not carried to outputs.

    16-bit PNG files are decoded with imagecodecs (libpng): Pillow reads
    16-bit RGB, RGBA and gray + alpha PNG as 8-bit, dropping the low byte.
    """
    path = Path(path)
    head = _check_file(path)

    if head.startswith(_TIFF_SIGNATURES):
        return _read_tiff(path, max_pixels)
    return _read_pillow(path, head, max_pixels)


def _check_file(path: Path) -> bytes:
    """Refuse a missing, empty or unreadable file; return its first bytes."""
    if not path.exists():
        raise ImageError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image file; pass a file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(_HEAD_SIZE)
    except OSError as exc:
        raise ImageError(
            f"{path}: cannot be read ({exc.strerror or exc}); check its permissions"
        ) from exc
    if size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes); re-export or re-copy it")
    return head


def _sniff(head: bytes) -> str | None:
    """Name the format from the file's signature, or None if unknown."""
    if head.startswith(_PNG_SIGNATURE):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(_TIFF_SIGNATURES):
        return "TIFF"
    return None


def _png_bit_depth(head: bytes) -> int | None:
    """Bit depth from a PNG's IHDR chunk (always the first chunk), or None."""
    if head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR" and len(head) > 24:
        return head[24]
    return None


def _corrupt(path: Path, fmt: str, exc: BaseException) -> ImageError:
    text = str(exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    return ImageError(
        f"{path}: truncated or corrupt {fmt} file ({reason}); re-export or re-copy it"
    )


def _check_pixels(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    pixels = width * height
    if max_pixels is not None and pixels > max_pixels:
        raise ImageError(
            f"{path}: {width}x{height} = {pixels} pixels exceeds the limit of "
            f"{max_pixels} pixels (a guard against decompression bombs); "
            f"pass --max-pixels {pixels} (max_pixels={pixels}) to read it"
        )


def _refuse_frames(path: Path, fmt: str, count: int, what: str = "frames") -> None:
    if count > 1:
        raise ImageError(
            f"{path}: {fmt} file has {count} {what}; deblur reads single-image "
            f"files only; save the {what[:-1]} you want as its own file"
        )


@contextmanager
def _pillow_without_limit() -> Iterator[None]:
    """Open with Pillow's own pixel limit lifted; `max_pixels` is checked instead."""
    with _PIL_LIMIT_LOCK:
        saved = PILImage.MAX_IMAGE_PIXELS
        PILImage.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            PILImage.MAX_IMAGE_PIXELS = saved


def _read_pillow(path: Path, head: bytes, max_pixels: int | None) -> Image:
    sniffed = _sniff(head)
    try:
        with _pillow_without_limit():
            pil = PILImage.open(path)
    except UnidentifiedImageError as exc:
        if sniffed is not None:
            raise _corrupt(path, sniffed, exc) from exc
        raise ImageError(
            f"{path}: not a PNG, JPEG, TIFF or BMP image (content not recognised); "
            "convert it to one of these formats"
        ) from exc
    except Exception as exc:
        raise _corrupt(path, sniffed or "image", exc) from exc

    fmt = "JPEG" if pil.format == "MPO" else pil.format
    try:
        with pil:
            samples, notes = _decode_pillow(path, pil, fmt, head, max_pixels)
    except (ImageError, MemoryError):
        raise
    except Exception as exc:
        raise _corrupt(path, fmt, exc) from exc
    return _make_image(samples, path, fmt, notes)


def _decode_pillow(
    path: Path, pil: PILImage.Image, fmt: str, head: bytes, max_pixels: int | None
) -> tuple[np.ndarray, list[str]]:
    """Check an opened file, then decode it into (H, W, S) stored samples."""
    if fmt not in READ_FORMATS:
        raise ImageError(
            f"{path}: {pil.format} images are not supported (supported: "
            f"{', '.join(READ_FORMATS)}); convert it to PNG or TIFF"
        )
    _check_pixels(path, pil.width, pil.height, max_pixels)

    notes: list[str] = []
    frames = getattr(pil, "n_frames", 1)
    if pil.format != "MPO":
        _refuse_frames(path, fmt, frames)
    elif frames > 1:
        notes.append(
            f"MPO file: read the primary image, {frames - 1} secondary image(s) ignored"
        )

    png_depth = _png_bit_depth(head) if fmt == "PNG" else None
    if png_depth == 16:
        # Not through Pillow at all: its getexif() would decode a PNG (8-bit).
        return _decode_png16(path, pil, notes), notes
    if png_depth in (2, 4) and pil.mode == "L":
        notes.append(f"{png_depth}-bit gray read as 8-bit gray")
    samples = _pillow_samples(path, pil, notes)

    orientation = pil.getexif().get(0x0112, 1)
    if orientation != 1:
        notes.append(
            f"EXIF orientation {orientation} not applied; pixels kept in stored order"
        )
    return samples, notes


def _pillow_samples(path: Path, pil: PILImage.Image, notes: list[str]) -> np.ndarray:
    """Decode with Pillow into an (H, W, S) array of stored samples."""
    mode = pil.mode
    transparency = "transparency" in pil.info
    target = None
    if mode == "1":
        target, note = "L", "1-bit image read as 8-bit gray"
    elif mode in ("P", "PA"):
        with_alpha = mode == "PA" or transparency
        target = "RGBA" if with_alpha else "RGB"
        note = f"palette image converted to {target}"
    elif mode == "CMYK":
        target, note = "RGB", "CMYK converted to RGB (no colour profile)"
    elif mode == "YCbCr":
        target, note = "RGB", "YCbCr converted to RGB"
    elif mode in ("L", "RGB") and transparency:
        target = "LA" if mode == "L" else "RGBA"
        note = "transparent colour (tRNS) converted to an alpha channel"
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        raise ImageError(
            f"{path}: unsupported {pil.format} mode {mode!r} (supported: gray, "
            "gray + alpha, RGB, RGBA, palette, 1-bit, CMYK); convert it to 8- or "
            "16-bit gray or RGB"
        )

    pil.load()
    if target is not None:
        pil = pil.convert(target)
        notes.append(note)
    samples = np.asarray(pil)
    return samples[..., None] if samples.ndim == 2 else samples


def _decode_png16(path: Path, pil: PILImage.Image, notes: list[str]) -> np.ndarray:
    """Decode a 16-bit PNG with libpng, which keeps all 16 bits of every mode."""
    samples = imagecodecs.png_decode(path.read_bytes())
    if samples.dtype != np.uint16:
        raise ImageError(
            f"{path}: 16-bit PNG decoded as {samples.dtype}; re-export it as a "
            "plain 16-bit PNG"
        )
    if samples.ndim == 2:
        samples = samples[..., None]

    # A tRNS key colour marks one gray or RGB value as fully transparent.
    key = pil.info.get("transparency")
    if key is not None and samples.shape[2] in (1, 3):
        key = np.atleast_1d(np.asarray(key, dtype=np.uint16))
        opaque = np.any(samples != key, axis=2)
        alpha = np.where(opaque, np.uint16(65535), np.uint16(0))
        samples = np.concatenate([samples, alpha[..., None]], axis=2)
        notes.append("transparent colour (tRNS) converted to an alpha channel")
    return samples


def _read_tiff(path: Path, max_pixels: int | None) -> Image:
    notes: list[str] = []
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise ImageError(f"{path}: TIFF file holds no image; re-export it")
            _refuse_frames(path, "TIFF", len(tif.pages), "pages")
            page = tif.pages[0]
            _check_pixels(path, page.imagewidth, page.imagelength, max_pixels)
            samples = _tiff_samples(path, page, notes)
    except (ImageError, MemoryError):
        raise
    except Exception as exc:
        raise _corrupt(path, "TIFF", exc) from exc
    return _make_image(samples, path, "TIFF", notes)


def _tiff_samples(path: Path, page: tifffile.TiffPage, notes: list[str]) -> np.ndarray:
    """Decode one TIFF page into (H, W, S) stored samples, with alpha last."""
    photometric = tifffile.PHOTOMETRIC
    kind = page.photometric
    kind_name = getattr(kind, "name", str(kind))
    base = {
        photometric.MINISWHITE: 1,
        photometric.MINISBLACK: 1,
        photometric.PALETTE: 1,
        photometric.RGB: 3,
        photometric.SEPARATED: 4,
    }.get(kind)
    if kind == photometric.YCBCR and page.compression == tifffile.COMPRESSION.JPEG:
        base = 3  # tifffile returns JPEG-compressed YCbCr as RGB
    inkset = page.tags.valueof(332, 1)  # InkSet: 1 is CMYK
    if base is None or (kind == photometric.SEPARATED and inkset != 1):
        raise ImageError(
            f"{path}: unsupported TIFF photometric interpretation {kind_name} "
            "(supported: gray, RGB, palette, CMYK); convert it to RGB"
        )
    if page.axes not in ("YX", "YXS", "SYX"):
        raise ImageError(
            f"{path}: unsupported TIFF layout with axes {page.axes!r} (expected "
            "one plane of rows, columns and samples); save it as a plain 2-D image"
        )

    samples = page.asarray()
    if page.axes == "SYX":
        samples = np.moveaxis(samples, 0, -1)
    if samples.ndim == 2:
        samples = samples[..., None]

    extra = samples.shape[2] - base
    if extra not in (0, 1) or (extra and kind == photometric.PALETTE):
        raise ImageError(
            f"{path}: TIFF has {samples.shape[2]} samples per pixel for "
            f"{kind_name} (expected {base}, or {base + 1} with alpha); "
            "save it as gray, RGB or RGBA"
        )
    if extra:
        alpha_kind = page.extrasamples[0] if page.extrasamples else 0
        if alpha_kind == tifffile.EXTRASAMPLE.ASSOCALPHA:
            notes.append("premultiplied (associated) alpha read as stored")
        elif alpha_kind != tifffile.EXTRASAMPLE.UNASSALPHA:
            notes.append("extra sample of unspecified meaning read as alpha")

    samples = _tiff_sample_type(path, page, samples, notes)

    if kind == photometric.PALETTE:
        # The colormap is 16-bit; its high byte is the 8-bit colour.
        colormap = (page.colormap >> 8).astype(np.uint8)
        samples = np.moveaxis(colormap[:, samples[..., 0]], 0, -1)
        notes.append("palette image converted to RGB")
    elif kind == photometric.MINISWHITE:
        if samples.dtype.kind == "f":
            raise ImageError(
                f"{path}: float TIFF stored min-is-white is not supported; "
                "save it min-is-black"
            )
        samples = samples.copy()
        samples[..., 0] = np.iinfo(samples.dtype).max - samples[..., 0]
        notes.append("min-is-white gray inverted to min-is-black")
    elif kind == photometric.SEPARATED:
        samples = _cmyk_to_rgb(samples)
        notes.append("CMYK converted to RGB (no colour profile)")
    return samples


def _tiff_sample_type(
    path: Path, page: tifffile.TiffPage, samples: np.ndarray, notes: list[str]
) -> np.ndarray:
    """Bring TIFF samples to uint8, uint16 or float32, or refuse them."""
    dtype = samples.dtype
    if dtype == np.bool_:
        notes.append("1-bit image read as 8-bit gray")
        return samples.astype(np.uint8) * np.uint8(255)
    if dtype in (np.uint8, np.uint16) and page.bitspersample == 8 * dtype.itemsize:
        return samples
    if dtype == np.float32:
        return samples
    if dtype in (np.float16, np.float64):
        notes.append(f"{dtype} samples read as float32")
        return samples.astype(np.float32)
    raise ImageError(
        f"{path}: unsupported TIFF samples: {page.bitspersample}-bit {dtype} "
        "(supported: 1, 8 and 16-bit unsigned integers, float32); convert it "
        "to 8- or 16-bit"
    )


def _cmyk_to_rgb(samples: np.ndarray) -> np.ndarray:
    """CMYK(+alpha) to RGB(+alpha) in the same dtype: ``R = (1 - C)(1 - K)``."""
    if samples.dtype.kind == "f":
        scale = 1.0
        cmyk = samples[..., :4].astype(np.float64)
    else:
        scale = float(np.iinfo(samples.dtype).max)
        cmyk = samples[..., :4] / scale
    rgb = (1.0 - cmyk[..., :3]) * (1.0 - cmyk[..., 3:4])
    if samples.dtype.kind != "f":
        rgb = np.rint(rgb * scale)
    return np.concatenate([rgb.astype(samples.dtype), samples[..., 4:]], axis=2)


def _make_image(samples: np.ndarray, path: Path, fmt: str, notes: list[str]) -> Image:
    """Split stored (H, W, S) samples into scaled colour and raw alpha."""
    colour_count = 1 if samples.shape[2] in (1, 2) else 3
    colour = samples[..., :colour_count]
    alpha = samples[..., colour_count] if samples.shape[2] > colour_count else None

    dtype = samples.dtype
    if dtype.kind == "u":
        data = colour.astype(np.float64) / np.iinfo(dtype).max
    else:
        data = colour.astype(np.float64)

    mode = ("L" if colour_count == 1 else "RGB") + ("A" if alpha is not None else "")
    if alpha is not None:
        alpha = np.ascontiguousarray(alpha)
    return Image(
        data=data,
        alpha=alpha,
        dtype=dtype,
        mode=mode,
        bit_depth=8 * dtype.itemsize,
        path=path,
        format=fmt,
        notes=notes,
    )


# ----------------------------------------------------------------------------
# writing


def write_image(
    path: str | os.PathLike,
    data: np.ndarray,
    like: Image,
    bit_depth: BitDepth | str = "same",
    *,
    overwrite: bool = True,
) -> WriteInfo:
    """Write `data` as an image stored like `like`: mode, depth and alpha.

    Parameters
    ----------
    path : str or path-like
        The output file; the format follows the suffix (``.png``, ``.jpg``,
        ``.jpeg``, ``.tif``, ``.tiff``, ``.bmp``). Written atomically.
    data : (H, W, C) ndarray
        Colour channels on the scale of :attr:`Image.data`: ``[0, 1]`` for
        integer outputs. ``(H, W)`` is taken as one channel.
    like : Image
        The image whose mode and alpha channel the output keeps, usually
        the input that `data` was restored from.
    bit_depth : {"same", 8, 16, "float32"}, default "same"
        Depth of the output; "same" keeps `like`'s.
    overwrite : bool, default True
        Replace an existing file at `path`; with False it raises
        ``FileExistsError``.

    Returns
    -------
    info : WriteInfo
        What was written, with the number of clipped values.

    Raises
    ------
    ValueError
        If the suffix is unknown, the depth or alpha cannot be stored in the
        format (float32 needs TIFF; JPEG and BMP store 8 bits and no alpha),
        `data` does not fit `like`, `data` holds NaN for an integer output,
        or `path` is the file `like` was read from.

    Notes
    -----
    Integer outputs: values are clipped to ``[0, 1]`` (the count is returned
    in :attr:`WriteInfo.clipped`, never clipped silently), scaled by the
    type's maximum and rounded to the nearest integer (``np.rint``). Float32
    outputs are written as given, with no clipping.

    The alpha channel of `like` is written back unchanged when the depth is
    the same, otherwise rescaled exactly (8 to 16 bits multiplies by 257).

    JPEG is written with quality 95 and no chroma subsampling.
    """
    path = Path(path)
    fmt = WRITE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"cannot tell the output format of {path} from its suffix "
            f"{path.suffix!r}; use one of {', '.join(WRITE_SUFFIXES)}"
        )
    depth = _resolve_depth(bit_depth, like)
    data = _check_data(data, like)
    _check_storable(path, fmt, depth, like, bit_depth)
    if like.path is not None and path.resolve() == Path(like.path).resolve():
        raise ValueError(
            f"refusing to overwrite the input image {path}; choose another output path"
        )

    samples, clipped, nonfinite = _encode_colour(path, data, depth)
    if like.alpha is not None:
        alpha = _convert_alpha(like.alpha, depth)
        samples = np.concatenate([samples, alpha[..., None]], axis=2)

    with atomic_path(path, overwrite=overwrite) as tmp:
        _WRITERS[fmt](tmp, samples, like.mode)
    return WriteInfo(
        path=path,
        format=fmt,
        mode=like.mode,
        bit_depth=depth,
        clipped=clipped,
        total=data.size,
        nonfinite=nonfinite,
    )


def _resolve_depth(bit_depth: BitDepth | str, like: Image) -> int:
    """Turn a `bit_depth` option into 8, 16 or 32 (float32)."""
    choices = {"same": like.bit_depth, 8: 8, 16: 16, "8": 8, "16": 16, "float32": 32}
    try:
        return choices[bit_depth]
    except (KeyError, TypeError):
        raise ValueError(
            f"bit_depth must be 'same', 8, 16 or 'float32', got {bit_depth!r}"
        ) from None


def _check_data(data: np.ndarray, like: Image) -> np.ndarray:
    data = np.asarray(data, dtype=np.float64)
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3 or data.shape[2] != like.channels:
        raise ValueError(
            f"data for a {like.mode} image must be (H, W, {like.channels}), "
            f"got shape {data.shape}"
        )
    if like.alpha is not None and data.shape[:2] != like.alpha.shape:
        raise ValueError(
            f"data of shape {data.shape} does not fit the alpha channel of "
            f"shape {like.alpha.shape} it is written with; keep (H, W) = "
            f"{like.alpha.shape}"
        )
    return data


def _check_storable(
    path: Path, fmt: str, depth: int, like: Image, bit_depth: BitDepth | str
) -> None:
    """Refuse a depth or an alpha channel that the output format cannot hold."""
    asked = "the input's depth" if bit_depth == "same" else "bit_depth"
    label = "float32" if depth == 32 else f"{depth}-bit"
    if depth == 32 and fmt != "TIFF":
        raise ValueError(
            f"float32 output ({asked}) needs a .tif or .tiff file, got {path.name}; "
            "change the suffix or pass bit_depth=8 or 16"
        )
    if depth != 8 and fmt in ("JPEG", "BMP"):
        raise ValueError(
            f"{fmt} stores 8-bit samples only, asked for {label} output "
            f"({asked}) to {path.name}; write .png or .tif, or pass bit_depth=8"
        )
    if like.alpha is not None and fmt in ("JPEG", "BMP"):
        raise ValueError(
            f"{fmt} output cannot store the alpha channel of this {like.mode} "
            f"image; write {path.stem}.png or {path.stem}.tif instead"
        )


def _encode_colour(
    path: Path, data: np.ndarray, depth: int
) -> tuple[np.ndarray, int, int]:
    """Colour channels in the output dtype, with the clipped and non-finite counts."""
    if depth == 32:
        nonfinite = int(np.count_nonzero(~np.isfinite(data)))
        return data.astype(np.float32), 0, nonfinite

    nan = int(np.count_nonzero(np.isnan(data)))
    if nan:
        raise ValueError(
            f"cannot write {path.name}: {nan} of {data.size} values are NaN, which "
            "an integer image cannot store (an unstable inverse produces them); "
            "check the kernel's gain, or pass bit_depth='float32' to keep them"
        )
    dtype = _DEPTH_DTYPES[depth]
    clipped = int(np.count_nonzero((data < 0.0) | (data > 1.0)))
    scaled = np.rint(np.clip(data, 0.0, 1.0) * np.iinfo(dtype).max)
    return scaled.astype(dtype), clipped, 0


def _convert_alpha(alpha: np.ndarray, depth: int) -> np.ndarray:
    """Alpha in the output dtype: unchanged, or rescaled between depths."""
    target = _DEPTH_DTYPES[depth]
    if alpha.dtype == target:
        return alpha
    if alpha.dtype == np.uint8 and target == np.uint16:
        return alpha.astype(np.uint16) * np.uint16(257)  # exact: 255 * 257 = 65535
    if alpha.dtype.kind == "u":
        fraction = alpha / float(np.iinfo(alpha.dtype).max)
    else:
        fraction = np.clip(alpha.astype(np.float64), 0.0, 1.0)
    if target == np.float32:
        return fraction.astype(np.float32)
    return np.rint(fraction * np.iinfo(target).max).astype(target)


def _write_png(tmp: Path, samples: np.ndarray, mode: str) -> None:
    # libpng writes every mode at 8 and 16 bits (Pillow cannot write 16-bit RGB).
    squeezed = samples[..., 0] if samples.shape[2] == 1 else samples
    tmp.write_bytes(imagecodecs.png_encode(np.ascontiguousarray(squeezed)))


def _write_pillow(fmt: str, tmp: Path, samples: np.ndarray, mode: str) -> None:
    squeezed = samples[..., 0] if samples.shape[2] == 1 else samples
    options = _JPEG_OPTIONS if fmt == "JPEG" else {}
    PILImage.fromarray(np.ascontiguousarray(squeezed)).save(tmp, format=fmt, **options)


def _write_tiff(tmp: Path, samples: np.ndarray, mode: str) -> None:
    squeezed = samples[..., 0] if samples.shape[2] == 1 else samples
    tifffile.imwrite(
        tmp,
        squeezed,
        photometric="minisblack" if mode.startswith("L") else "rgb",
        planarconfig="contig" if squeezed.ndim == 3 else None,
        extrasamples=("unassalpha",) if mode.endswith("A") else None,
        metadata=None,
    )


_WRITERS = {
    "PNG": _write_png,
    "JPEG": lambda tmp, samples, mode: _write_pillow("JPEG", tmp, samples, mode),
    "BMP": lambda tmp, samples, mode: _write_pillow("BMP", tmp, samples, mode),
    "TIFF": _write_tiff,
}


# ----------------------------------------------------------------------------
# torch


def to_tensor(
    data: np.ndarray,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Turn ``(H, W, C)`` image data into a ``(1, C, H, W)`` tensor.

    Parameters
    ----------
    data : (H, W, C) or (H, W) ndarray
        Usually :attr:`Image.data`.
    dtype : torch.dtype, default torch.float64
        Float64 keeps the data exactly; pass ``torch.float32`` for speed.
    device : torch device, optional

    Returns
    -------
    tensor : (1, C, H, W) Tensor
        Contiguous, a copy of `data`.
    """
    array = np.asarray(data)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"to_tensor expects (H, W, C) data, got shape {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    return tensor.unsqueeze(0).to(device=device, dtype=dtype).contiguous()


def from_tensor(tensor: torch.Tensor) -> np.ndarray:
    """Turn a ``(1, C, H, W)`` or ``(C, H, W)`` tensor into ``(H, W, C)`` float64.

    Parameters
    ----------
    tensor : (1, C, H, W) or (C, H, W) Tensor
        Any device and float dtype; detached from autograd.

    Returns
    -------
    data : (H, W, C) ndarray of float64
    """
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ValueError(
                f"from_tensor takes one image, got a batch of shape "
                f"{tuple(tensor.shape)}; index it, e.g. from_tensor(batch[i])"
            )
        tensor = tensor[0]
    if tensor.dim() != 3:
        raise ValueError(
            f"from_tensor expects (1, C, H, W) or (C, H, W), got shape "
            f"{tuple(tensor.shape)}"
        )
    array = tensor.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.ascontiguousarray(array.transpose(1, 2, 0))
