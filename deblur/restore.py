"""Restoring one image file: a pure function of its paths and options.

:func:`restore_file` reads a blurred image, undoes the blur, writes the result
and scores it against a reference, and returns one report record.  It never
raises for a bad file: the record's ``error`` says in one line what went wrong,
so a batch can be mapped by any executor and one bad file never stops the
others.  Only an interruption (``KeyboardInterrupt``, or any other
``BaseException`` such as the CLI's SIGTERM exception) passes through, with the
partial record attached as ``exc.record``.

Nothing half-done is ever left behind: the output is written atomically
(:mod:`deblur.atomic`) and only after the solve gave finite values of the
input's exact shape.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .kernel import Kernel, KernelError, Stability
from .ops import inverse_causal_conv2d

log = logging.getLogger(__name__)

__all__ = [
    "CLIP_NOTE",
    "METHODS",
    "RestoreError",
    "RestoreOptions",
    "failed_record",
    "file_error",
    "one_line",
    "resolve_device",
    "restore_array",
    "restore_file",
]

METHODS = ("inverse", "wiener", "unsupervised-wiener", "richardson-lucy")

#: the end of the note that counts clipped values (the CLI shows it as a column)
CLIP_NOTE = "values outside [0, 1] clipped"

#: longest error message kept in a record; the rest is cut with an ellipsis
MAX_MESSAGE = 400

_FLOAT32_MAX = float(np.finfo(np.float32).max)


class RestoreError(ValueError):
    """One file that could not be restored; the message is one line."""


@dataclass(frozen=True)
class RestoreOptions:
    """What to do with every file of a batch.

    Parameters
    ----------
    kernel : Kernel
        The blur kernel (PSF) and its anchor.
    method : str
        ``inverse`` (exact) or a regularised baseline, see :data:`METHODS`.
    device : str
        A torch device name, already resolved (:func:`resolve_device`).
    bit_depth : {"same", 8, 16, "float32"}
        Depth of the outputs.
    overwrite : bool
        Replace existing outputs (never an input).
    params : dict
        Method parameters (``balance``, ``num_iter``).
    stability : Stability, optional
        The kernel's noise gain, quoted when a solve goes non-finite.
    max_pixels : int, optional
        Refuse images with more pixels; ``None`` keeps the default limit of
        :func:`deblur.imageio.read_image`, ``0`` lifts it.
    """

    kernel: Kernel
    method: str = "inverse"
    device: str = "cpu"
    bit_depth: str | int = "same"
    overwrite: bool = False
    params: dict = field(default_factory=dict)
    stability: Stability | None = None
    max_pixels: int | None = None


def resolve_device(name: str) -> str:
    """Turn ``auto|cpu|cuda`` into a usable torch device name.

    Raises
    ------
    ValueError
        If ``cuda`` is asked for and torch sees no CUDA device.
    """
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {name} asked for, but torch sees no CUDA device "
                f"(torch {torch.__version__}, CUDA build: "
                f"{torch.version.cuda or 'no'}); use --device cpu"
            )
        return name
    raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")


def restore_array(data: np.ndarray, options: RestoreOptions) -> tuple[np.ndarray, dict]:
    """Undo the blur on a float ``(H, W, C)`` array; return it and the parameters used.

    The exact inverse runs in float64 on the CPU and in float32 on a GPU.
    """
    kernel = options.kernel
    if options.method == "inverse":
        dtype = torch.float64 if options.device == "cpu" else torch.float32
        image = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1)))[None]
        image = image.to(device=options.device, dtype=dtype)
        weights = kernel.tensor(dtype, options.device)
        restored = inverse_causal_conv2d(image, weights, kernel.anchor)
        out = restored[0].permute(1, 2, 0).to("cpu", torch.float64).numpy()
        return out, {}
    from .baselines import deconvolve

    return deconvolve(
        data, kernel.weights, options.method, anchor=kernel.anchor, **options.params
    )


def one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type's name."""
    for line in str(exc).splitlines():
        if line.strip():
            text = line.strip()
            return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."
    return type(exc).__name__


def _new_record(source, output, reference, method) -> dict:
    return {
        "input": str(source),
        "output": None,
        "reference": str(reference) if reference else None,
        "method": method,
        "psnr_before": None,
        "psnr_after": None,
        "ssim_before": None,
        "ssim_after": None,
        "data_range": None,
        "clipped": None,
        "seconds": None,
        "solve_seconds": None,
        "error": None,
        "reference_error": None,
        "notes": [],
    }


def failed_record(source: Path, error: str, method: str = "inverse") -> dict:
    """A record for a file that failed before :func:`restore_file` could run."""
    record = _new_record(source, None, None, method)
    record["error"] = error
    return record


def _quantised(data: np.ndarray, bit_depth: int) -> np.ndarray:
    """The values a file of ``bit_depth`` bits will hold, on the [0, 1] scale."""
    if bit_depth == 32:
        return data.astype(np.float32).astype(np.float64)
    top = 2**bit_depth - 1
    return np.rint(np.clip(data, 0.0, 1.0) * top) / top


def _score(
    record: dict,
    sharp: np.ndarray,
    blurred: np.ndarray,
    restored: np.ndarray,
    top: float,
):
    from .metrics import psnr, ssim

    record["psnr_before"] = psnr(sharp * top, blurred * top, data_range=top)
    record["psnr_after"] = psnr(sharp * top, restored * top, data_range=top)
    record["ssim_before"] = ssim(sharp * top, blurred * top, data_range=top)
    record["ssim_after"] = ssim(sharp * top, restored * top, data_range=top)


def _output_depth(bit_depth, image) -> int:
    if bit_depth == "same":
        return image.bit_depth
    if bit_depth == "float32":
        return 32
    return int(bit_depth)


def _where(device: str) -> str:
    return "the cpu" if device == "cpu" else f"device {device}"


def _solve(source: Path, image, options: RestoreOptions) -> tuple[np.ndarray, dict]:
    """Run the solve; turn a solver or device failure into a one-line error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return restore_array(image.data, options)
    except MemoryError:
        raise
    except Exception as exc:
        log.debug("solve of %s failed", source, exc_info=True)
        if options.device == "cpu" and isinstance(exc, ValueError):
            raise RestoreError(f"{source}: {one_line(exc)}") from exc
        hint = "" if options.device == "cpu" else "; retry with --device cpu"
        raise RestoreError(
            f"{source}: the {options.method} solve failed on {_where(options.device)} "
            f"({type(exc).__name__}: {one_line(exc)}); nothing written{hint}"
        ) from exc


def _check_storable(source: Path, output: Path, image, depth: int) -> None:
    """Refuse, before solving, an output format that cannot hold the result.

    This happens when a file's name does not match its content (a float32
    TIFF named ``.jpg``): the output takes the input's name.
    """
    from .imageio import WRITE_SUFFIXES

    fmt = WRITE_SUFFIXES.get(output.suffix.lower())
    real = (
        f" (it is a {image.format} file)"
        if image.format and image.format != fmt
        else ""
    )
    if image.alpha is not None and fmt in ("JPEG", "BMP"):
        raise RestoreError(
            f"{source}: an image with alpha cannot be written as {output.name}{real}: "
            f"{fmt} holds no alpha; rename the input for its format (.png or .tif)"
        )
    if depth == 32 and fmt != "TIFF" or depth == 16 and fmt in ("JPEG", "BMP"):
        label = "float32" if depth == 32 else f"{depth}-bit"
        holds = "8-bit samples only" if fmt in ("JPEG", "BMP") else "no float32"
        need = ".tif" if depth == 32 else ".png or .tif"
        raise RestoreError(
            f"{source}: {label} samples cannot be written as {output.name}{real}: "
            f"{fmt} holds {holds}; rename the input for its format ({need}), or "
            "pass --bit-depth 8"
        )


def _check_result(source: Path, restored, image, options: RestoreOptions, depth: int):
    """Refuse a result that would make a wrong file: bad shape, NaN, infinity."""
    if restored.shape != image.data.shape:
        raise RestoreError(
            f"{source}: the {options.method} solve returned shape {restored.shape} "
            f"for an input of shape {image.data.shape}; nothing written (a bug: "
            "please report it)"
        )
    finite = np.isfinite(restored)
    if depth == 32:
        # float32 cannot hold what float64 calls finite beyond ~3.4e38
        with np.errstate(invalid="ignore"):
            finite &= np.abs(restored) <= _FLOAT32_MAX
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        s = options.stability
        gain = f"{s.gain:.3g}, {s.verdict}" if s is not None else "not measured"
        raise RestoreError(
            f"{source}: the solve gave {bad} of {finite.size} non-finite values "
            f"(kernel noise gain {gain}); nothing written; check the kernel and "
            "its --anchor, or use a regularised --method"
        )


def _reference_scores(record, reference, image, restored, depth, kwargs):
    """Score against the reference; problems become notes, never a failure."""
    from .imageio import ImageError, read_image

    try:
        sharp = read_image(reference, **kwargs)
    except ImageError as exc:
        msg = f"reference not scored: {one_line(exc)}"
        record["notes"].append(msg)
        record["reference_error"] = msg
        return
    H, W, C = image.data.shape
    if sharp.data.shape != image.data.shape:
        h, w, c = sharp.data.shape
        msg = (
            f"reference {reference} is {w}x{h}x{c}, the input is {W}x{H}x{C}; "
            "not scored"
        )
        record["notes"].append(msg)
        record["reference_error"] = msg
        return
    if sharp.bit_depth != image.bit_depth:
        record["notes"].append(
            f"reference is {sharp.bit_depth}-bit, the input {image.bit_depth}-bit: "
            f"both scored on the input's range ({record['data_range']})"
        )
    top = float(record["data_range"])
    _score(record, sharp.data, image.data, _quantised(restored, depth), top)


def restore_file(
    source: Path,
    output: Path,
    options: RestoreOptions,
    reference: Path | None = None,
    reference_error: str | None = None,
) -> dict:
    """Restore one file and return its report record (never raises for bad input).

    Parameters
    ----------
    source : Path
        The blurred image.
    output : Path
        Where the restored image goes; its folder must exist.
    options : RestoreOptions
    reference : Path, optional
        The sharp original, to score PSNR and SSIM.
    reference_error : str, optional
        Why there is no reference (recorded in the notes).

    Returns
    -------
    record : dict
        ``input``, ``output`` (``None`` unless written), ``reference``, the
        size, PSNR and SSIM of the blurred and of the restored image against
        the reference (``data_range`` from the input's bit depth), the share
        of ``clipped`` values, ``seconds`` (the whole file), ``solve_seconds``
        (the solve alone, with the copies to and from the device), ``error``
        (``None`` when it went well, else one line naming the file),
        ``reference_error`` and ``notes`` (conversions while reading,
        clipping).

    Raises
    ------
    KeyboardInterrupt, BaseException
        Only interruptions pass through, with the partial record as
        ``exc.record``; whatever they interrupted left no partial file.

    Notes
    -----
    Nothing is written when the image cannot be read, the solve fails or
    yields non-finite values (the message quotes the kernel's noise gain),
    or the result's shape differs from the input's.  Restored values outside
    ``[0, 1]`` are clipped for integer outputs, and counted.  An unexpected
    exception becomes the file's error with its type; ``--verbose`` logs its
    traceback.
    """
    source, output = Path(source), Path(output)
    start = time.perf_counter()
    record = _new_record(source, output, reference, options.method)
    stage = ["checking"]
    try:
        _restore(record, stage, source, output, options, reference, reference_error)
    except Exception as exc:  # noqa: BLE001 - any failure is this file's one line
        record["error"] = file_error(exc, stage[0], source, output, record)
    except BaseException as exc:
        _interrupted(exc, record, stage[0], start)
        raise
    record["seconds"] = time.perf_counter() - start
    for key in ("psnr_before", "psnr_after"):
        v = record[key]
        if v is not None and not math.isfinite(v):
            record["notes"].append(f"{key} is infinite: identical to the reference")
    return record


def file_error(
    exc: Exception, stage: str, source: Path, output: Path, record: dict | None = None
) -> str:
    """One line for what went wrong with one file, naming the file.

    ``stage`` is what was being done (``reading``, ``solving``, ``writing``,
    ``scoring``).  Expected failures keep their message; anything else gets
    its exception type and is logged with its traceback at debug level.
    """
    from .imageio import ImageError

    if isinstance(exc, (RestoreError, ImageError, KernelError)):
        return _named(one_line(exc), source, output)
    if isinstance(exc, FileExistsError):
        # another run wrote the output between our check and our rename
        return f"{output}: output exists; pass --overwrite to replace it"
    if isinstance(exc, OSError):
        reason = exc.strerror or one_line(exc)
        if stage == "writing":
            return f"{output}: not written ({reason}); nothing left behind"
        return f"{source}: failed while {stage} ({reason})"
    if isinstance(exc, MemoryError):
        r = record or {}
        size = f" ({r['width']}x{r['height']}x{r['channels']})" if "width" in r else ""
        return (
            f"{source}: out of memory while {stage}{size}; nothing written; free "
            "memory, or lower --max-pixels to skip images this large"
        )
    if isinstance(exc, ValueError):
        return _named(one_line(exc), source, output)
    log.debug("unexpected error on %s", source, exc_info=exc)
    return (
        f"{source}: unexpected {type(exc).__name__} while {stage}: "
        f"{one_line(exc)}; nothing written (--verbose shows the traceback)"
    )


def _interrupted(exc: BaseException, record: dict, stage: str, start: float) -> None:
    """Mark a record cut short by ``exc`` and attach it to the exception."""
    record["seconds"] = time.perf_counter() - start
    if record.get("output") is None:
        record["error"] = (
            f"{record['input']}: interrupted while {stage}; nothing written"
        )
    else:
        record["notes"].append(f"interrupted while {stage}; output complete")
    try:
        exc.record = record
    except AttributeError:  # pragma: no cover - exceptions without __dict__
        pass


def _named(message: str, source: Path, output: Path) -> str:
    """Make sure a message names the file it is about."""
    if str(source) in message or str(output) in message:
        return message
    return f"{source}: {message}"


def _restore(record, stage, source, output, options, reference, reference_error):
    from .imageio import data_range, read_image, write_image

    # checks that need no reading
    if output.resolve() == source.resolve():
        raise RestoreError(
            f"{output}: output would overwrite its input; choose another --out"
        )
    if output.exists() and not options.overwrite:
        raise RestoreError(f"{output}: output exists; pass --overwrite to replace it")
    if reference is not None and output.resolve() == Path(reference).resolve():
        raise RestoreError(
            f"{output}: output would overwrite its reference {reference}; choose "
            "another --out"
        )

    # read
    stage[0] = "reading"
    if options.max_pixels is None:
        kwargs = {}
    else:
        kwargs = {"max_pixels": options.max_pixels or None}
    image = read_image(source, **kwargs)
    H, W, C = image.data.shape
    record.update(width=W, height=H, channels=C, bit_depth=image.bit_depth)
    record["notes"] += list(image.notes)
    record["data_range"] = data_range(image)
    kc = options.kernel.channels
    if kc is not None and kc != C:
        raise RestoreError(
            f"{source}: the kernel has {kc} channels (shape "
            f"{options.kernel.shape}) but the image has {C}; use a (kh, kw) "
            "kernel or one with a kernel per channel of this image"
        )

    depth = _output_depth(options.bit_depth, image)
    _check_storable(source, output, image, depth)

    # solve, then refuse anything that would make a wrong file
    stage[0] = "solving"
    solve_start = time.perf_counter()
    restored, used = _solve(source, image, options)
    record["solve_seconds"] = time.perf_counter() - solve_start
    if used:
        record["params"] = used
    _check_result(source, restored, image, options, depth)

    # write (atomically; refuses a file that appeared meanwhile unless --overwrite)
    stage[0] = "writing"
    info = write_image(
        output,
        restored,
        like=image,
        bit_depth=options.bit_depth,
        overwrite=options.overwrite,
    )
    record["output"] = str(output)
    record["clipped"] = info.clipped / max(info.total, 1)
    if info.clipped:
        record["notes"].append(f"{info.clipped} of {info.total} {CLIP_NOTE}")
    if info.format == "JPEG":
        record["notes"].append(
            "JPEG output is re-encoded, which is lossy; write "
            "PNG or TIFF (--bit-depth float32) to keep the exact result"
        )

    # score
    stage[0] = "scoring"
    if reference is not None:
        try:
            _reference_scores(record, reference, image, restored, depth, kwargs)
        except Exception as exc:  # scoring must not fail a written file
            log.debug("scoring %s failed", source, exc_info=True)
            msg = f"reference not scored: {type(exc).__name__}: {one_line(exc)}"
            record["notes"].append(msg)
            record["reference_error"] = msg
    elif reference_error:
        record["notes"].append(reference_error)
        record["reference_error"] = reference_error
