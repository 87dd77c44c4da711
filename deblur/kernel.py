"""The blur kernel (PSF) as a value: its files, checks, sums and noise gain.

A kernel file is a ``.npy`` array (read without unpickling) or a ``.txt`` /
``.csv`` table of numbers.  Beside ``k.npy`` a sidecar ``k.npy.json`` may record
the anchor corner, so a kernel written by ``deblur fit-kernel`` carries its
convention with it.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .ops.forms import ANCHORS, KernelForm, classify_kernel, flip_dims

__all__ = [
    "KernelError",
    "Kernel",
    "Stability",
    "load_kernel",
    "save_kernel",
    "make_kernel",
    "noise_gain",
    "stability",
    "KERNEL_KINDS",
]

#: anchors the exact inverse accepts, plus ``center`` for the regularised methods
ANCHOR_CHOICES = (*ANCHORS, "center")

#: a gain above this makes the exact inverse useless on quantised images
MAX_GAIN = 1e4

#: the largest kernel side deblur accepts (the stability check alone grows as
#: the fourth power of the side)
MAX_KERNEL_SIDE = 129


class KernelError(ValueError):
    """A kernel file or value that cannot be used."""


@dataclass(frozen=True)
class Stability:
    """How the exact inverse amplifies noise: ``gain = ||K^-1 delta||_2``.

    ``verdict`` is ``"stable"`` (the impulse response decays), ``"marginal"``
    (it neither decays nor grows: usable on clean data only) or ``"unstable"``
    (it grows: the inverse of a quantised image is noise).
    """

    gain: float
    verdict: str
    far_share: float  # share of the response's energy in the far half of the grid

    @property
    def stable(self) -> bool:
        return self.verdict != "unstable"


@dataclass(frozen=True)
class Kernel:
    """A blur kernel with its anchor corner.

    Parameters
    ----------
    weights : (kh, kw), (C, kh, kw) or (C, C, kh, kw) float64 ndarray
    anchor : str
        Corner of the array that holds the anchor tap, or ``"center"`` for a
        centred kernel (regularised methods only).
    path : Path, optional
        The file it was read from.
    """

    weights: np.ndarray
    anchor: str = "bottom-right"
    path: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def form(self) -> KernelForm:
        return classify_kernel(torch.from_numpy(self.weights))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.weights.shape)

    @property
    def kernel_size(self) -> tuple[int, int]:
        return tuple(self.weights.shape[-2:])

    @property
    def channels(self) -> int | None:
        """Channels the kernel is made for, ``None`` for a shared ``(kh, kw)`` kernel."""
        return None if self.weights.ndim == 2 else self.weights.shape[0]

    @property
    def sums(self) -> list[float]:
        """The sum of the taps, per output channel (one entry for a shared kernel)."""
        w = self.weights
        if w.ndim == 2:
            return [float(w.sum())]
        return [float(s) for s in w.reshape(w.shape[0], -1).sum(axis=1)]

    @property
    def anchor_index(self) -> tuple[int, int] | None:
        kh, kw = self.kernel_size
        if self.anchor == "center":
            return None
        dims = flip_dims(self.anchor)
        return (0 if -2 in dims else kh - 1, 0 if -1 in dims else kw - 1)

    @property
    def anchor_values(self) -> list[float]:
        """The anchor tap of each channel (the diagonal of the block for mixing)."""
        idx = self.anchor_index
        if idx is None:
            return []
        w = self.weights
        if w.ndim == 2:
            return [float(w[idx])]
        if w.ndim == 3:
            return [float(v) for v in w[:, idx[0], idx[1]]]
        return [float(v) for v in np.diagonal(w[:, :, idx[0], idx[1]])]

    def tensor(self, dtype=torch.float64, device="cpu") -> torch.Tensor:
        return torch.as_tensor(self.weights, dtype=dtype, device=device)

    def normalized(self) -> "Kernel":
        """Rescale so that the taps of each output channel sum to one."""
        w = self.weights
        sums = np.array(self.sums)
        if np.any(sums == 0):
            raise KernelError(
                f"{_where(self)}kernel taps sum to zero, so it cannot be normalised"
            )
        shape = (1,) * w.ndim if w.ndim == 2 else (-1,) + (1,) * (w.ndim - 1)
        return replace(self, weights=w / sums.reshape(shape))

    def with_anchor(self, anchor: str) -> "Kernel":
        return replace(self, anchor=_check_anchor_choice(anchor))

    def describe(self, gain: Stability | None = None) -> dict:
        """The kernel's record for reports."""
        s = gain or stability(self)
        sums = self.sums
        return {
            "path": str(self.path) if self.path else None,
            "shape": list(self.shape),
            "sum": sums[0] if len(sums) == 1 else sums,
            "gain": s.gain if math.isfinite(s.gain) else None,
            "verdict": s.verdict,
            "anchor": self.anchor,
        }


def _where(kernel_or_path) -> str:
    path = getattr(kernel_or_path, "path", kernel_or_path)
    return f"{path}: " if path else ""


def _check_anchor_choice(anchor: str) -> str:
    if anchor not in ANCHOR_CHOICES:
        raise KernelError(
            f"anchor must be one of {', '.join(ANCHOR_CHOICES)}, got {anchor!r}"
        )
    return anchor


def _read_array(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
                with open(path, "rb") as file:
                    is_npy = file.read(6) == b"\x93NUMPY"
                if not is_npy:
                    raise KernelError(
                        f"{path}: cannot read the .npy file (no .npy header: "
                        "pickled data or another format; refused without "
                        "unpickling); save the kernel with numpy.save"
                    ) from None
                raise KernelError(
                    f"{path}: holds Python objects (a pickled array); refused "
                    "without unpickling, save the kernel as a plain float array"
                ) from None
            raise KernelError(f"{path}: not a valid .npy file ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - OSError, EOFError, a bad header's TokenError
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise KernelError(f"{path}: cannot read the .npy file ({reason})") from None
        if array.dtype.kind not in "fiu":
            raise KernelError(f"{path}: holds {array.dtype} values, expected numbers")
        return np.asarray(array, dtype=np.float64)
    if suffix in (".txt", ".csv", ".tsv"):
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise KernelError(f"{path}: cannot read the kernel file ({exc})") from None
        rows = []
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                rows.append([float(v) for v in line.replace(",", " ").split()])
            except ValueError:
                raise KernelError(
                    f"{path}: line {line!r} is not a row of numbers"
                ) from None
        if not rows:
            raise KernelError(f"{path}: the kernel file is empty")
        if len({len(r) for r in rows}) != 1:
            raise KernelError(
                f"{path}: rows have different lengths "
                f"{sorted({len(r) for r in rows})}; a kernel is a rectangle"
            )
        return np.array(rows, dtype=np.float64)
    raise KernelError(
        f"{path}: unknown kernel format {suffix or '(no extension)'!r}; "
        "use .npy, .txt or .csv"
    )


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def validate(kernel: Kernel) -> Kernel:
    """Check a kernel's values and shape; raise :class:`KernelError` if unusable."""
    w = kernel.weights
    where = _where(kernel)
    if w.ndim not in (2, 3, 4):
        raise KernelError(
            f"{where}kernel must be 2-D (kh, kw), 3-D (C, kh, kw) or 4-D "
            f"(C, C, kh, kw), got {w.ndim}-D of shape {w.shape}"
        )
    if w.size == 0:
        raise KernelError(f"{where}kernel is empty, shape {w.shape}")
    if w.ndim == 4 and w.shape[0] != w.shape[1]:
        raise KernelError(
            f"{where}a 4-D kernel must be (C, C, kh, kw), got shape {w.shape}"
        )
    if max(w.shape[-2:]) > MAX_KERNEL_SIDE:
        raise KernelError(
            f"{where}kernel is {w.shape[-2]}x{w.shape[-1]}, larger than the "
            f"{MAX_KERNEL_SIDE}x{MAX_KERNEL_SIDE} deblur handles; crop it to the "
            "taps that carry its weight"
        )
    if not np.all(np.isfinite(w)):
        bad = int(np.sum(~np.isfinite(w)))
        raise KernelError(f"{where}kernel has {bad} NaN or infinite taps")
    if kernel.anchor != "center":
        values = kernel.anchor_values
        if any(v == 0 for v in values):
            raise KernelError(
                f"{where}kernel anchor tap ({kernel.anchor} corner, index "
                f"{kernel.anchor_index}) is zero, so it has no inverse; "
                f"{_corner_hint(kernel)}"
            )
        if w.ndim == 4:
            a, b = kernel.anchor_index
            block = w[:, :, a, b]
            if np.any(np.triu(block, 1) != 0):
                raise KernelError(
                    f"{where}a channel-mixing kernel's anchor block must be lower "
                    "triangular (no input channel after the output channel at "
                    "the same pixel)"
                )
    return kernel


def _corner_hint(kernel: Kernel) -> str:
    """Say where the weight of the kernel sits and what to use for it."""
    w = np.abs(kernel.weights)
    plane = w.reshape(-1, *kernel.kernel_size).sum(axis=0)
    kh, kw = kernel.kernel_size
    i, j = np.unravel_index(int(np.argmax(plane)), plane.shape)
    corners = {
        (kh - 1, kw - 1): "bottom-right",
        (kh - 1, 0): "bottom-left",
        (0, kw - 1): "top-right",
        (0, 0): "top-left",
    }
    if (i, j) in corners and corners[(i, j)] != kernel.anchor:
        return f"its largest tap is in the {corners[(i, j)]} corner: try --anchor {corners[(i, j)]}"
    if (i, j) not in corners:
        return (
            f"its largest tap is at ({i}, {j}), inside the kernel: this looks like "
            "a centred blur, which has no exact causal inverse; use "
            "--method wiener (or another regularised method) with --anchor center"
        )
    return "check the kernel's anchor corner (--anchor)"


def load_kernel(path: str | Path, anchor: str | None = None) -> Kernel:
    """Read and check a kernel file.

    Parameters
    ----------
    path : str or Path
        ``.npy`` (never unpickled), ``.txt`` or ``.csv``.
    anchor : str, optional
        The anchor corner; by default the one recorded in the sidecar
        ``<path>.json`` if there is one, else ``"bottom-right"``.

    Raises
    ------
    KernelError
        Missing or unreadable file, pickled or non-numeric data, wrong number of
        dimensions, NaN or infinite taps, an empty kernel, or a zero anchor tap.
    """
    path = Path(path)
    if anchor is not None:
        _check_anchor_choice(anchor)
    if not path.exists():
        raise KernelError(f"{path}: kernel file not found")
    if path.is_dir():
        raise KernelError(f"{path}: is a folder, expected a kernel file")
    weights = _read_array(path)
    recorded = None
    side = _sidecar(path)
    if side.exists():
        try:
            recorded = json.loads(side.read_text()).get("anchor")
        except (OSError, ValueError, AttributeError):
            warnings.warn(f"{side}: unreadable kernel metadata, ignored", stacklevel=2)
    if anchor is not None and recorded is not None and anchor != recorded:
        raise KernelError(
            f"{path}: --anchor {anchor} disagrees with the anchor {recorded!r} "
            f"recorded in {side.name}; drop --anchor or fix the metadata"
        )
    kernel = Kernel(
        weights, _check_anchor_choice(anchor or recorded or "bottom-right"), path
    )
    return validate(kernel)


def save_kernel(path: str | Path, kernel: Kernel, **extra) -> Path:
    """Write ``kernel`` as ``.npy`` (or ``.txt``/``.csv`` for 2-D) plus its sidecar.

    The sidecar ``<path>.json`` records shape, anchor, sum and gain (and
    anything in ``extra``).  Both files are written atomically.
    """
    from .atomic import write_bytes_atomic, write_text_atomic

    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        import io

        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(kernel.weights, dtype=np.float64))
        write_bytes_atomic(path, buffer.getvalue())
    elif suffix in (".txt", ".csv"):
        if kernel.weights.ndim != 2:
            raise KernelError(
                f"{path}: a {kernel.weights.ndim}-D kernel cannot be written as "
                "text; use a .npy file"
            )
        sep = "," if suffix == ".csv" else " "
        lines = [sep.join(repr(float(v)) for v in row) for row in kernel.weights]
        write_text_atomic(path, "\n".join(lines) + "\n")
    else:
        raise KernelError(f"{path}: kernel files are .npy, .txt or .csv")
    meta = {**kernel.describe(), **extra}
    meta["path"] = str(path)
    write_text_atomic(_sidecar(path), json.dumps(meta, indent=2) + "\n")
    return path


def _impulse_response(kernel: Kernel, size: int) -> np.ndarray:
    from .ops.solve import inverse_causal_conv2d

    w = kernel.tensor(torch.float64)
    C = 1 if w.dim() == 2 else w.shape[0]
    # one impulse per input channel, each its own batch item, in the corner
    # from which the response spreads over the grid
    delta = torch.zeros(C, C, size, size, dtype=torch.float64)
    i, j = kernel.anchor_index
    r = 0 if i == kernel.kernel_size[0] - 1 else size - 1
    c = 0 if j == kernel.kernel_size[1] - 1 else size - 1
    delta[range(C), range(C), r, c] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        h = inverse_causal_conv2d(delta, w, kernel.anchor).numpy()
    if (r, c) != (0, 0):
        h = h[..., :: (1 if r == 0 else -1), :: (1 if c == 0 else -1)]
    return h


def stability(kernel: Kernel, size: int | None = None) -> Stability:
    """Measure the noise gain of the exact inverse and give a verdict.

    The impulse response ``h = K^-1 delta`` is computed with the solver itself
    on a ``size x size`` grid (default: eight times the kernel side, at least
    64; four times for sides above 16).
    ``gain = ||h||_2`` (the worst input channel); if the share of its energy on
    the far half of the grid does not vanish, the recursion does not decay.

    Notes
    -----
    ``|anchor| > sum |other taps|`` is sufficient for stability, not necessary.
    A centred kernel read with a corner anchor is typically wildly unstable.
    """
    if kernel.anchor == "center":
        # no exact inverse; report what a corner reading of it would give
        kernel = kernel.with_anchor("bottom-right")
    side = max(kernel.kernel_size)
    size = size or (max(64, 8 * side) if side <= 16 else 4 * side)
    h = _impulse_response(kernel, size)
    with np.errstate(over="ignore", invalid="ignore"):
        energy = h.reshape(h.shape[0], -1, size, size) ** 2
        total = energy.sum(axis=(1, 2, 3))
        half = size // 2
        near = energy[..., :half, :half].sum(axis=(1, 2, 3))
        far_share = np.where(total > 0, 1.0 - near / total, 1.0)
    total = float(np.max(total))
    gain = math.sqrt(total) if math.isfinite(total) else math.inf
    far = float(np.nanmax(far_share)) if np.all(np.isfinite(far_share)) else 1.0
    if not math.isfinite(gain) or gain > MAX_GAIN or far > 0.95:
        verdict = "unstable"
    elif far > 1e-4:
        verdict = "marginal"
    else:
        verdict = "stable"
    return Stability(gain, verdict, far)


def noise_gain(kernel: Kernel) -> float:
    """``||K^-1 delta||_2``: white noise of level s comes out at about gain * s."""
    return stability(kernel).gain


KERNEL_KINDS = ("diagonal", "corner-gaussian", "motion", "gaussian", "per-channel")


def make_kernel(
    kind: str,
    size: int | tuple[int, int] = 5,
    *,
    ratio: float = 0.6,
    sigma: float = 1.0,
    anchor: str = "bottom-right",
) -> Kernel:
    """Build a synthetic kernel, normalised to sum one.

    ``diagonal``: taps ``ratio**t`` along the diagonal from the anchor (stable,
    gain about 2.7 for 5x5 and ratio 0.6); ``corner-gaussian``: a Gaussian of
    width ``sigma`` peaked at the anchor corner; ``motion``: a horizontal
    ``1 x n`` blur with taps ``ratio**t`` from the anchor (``ratio=1`` is
    uniform motion, a marginal case); ``gaussian``: a centred Gaussian (not
    causal: its exact inverse is unstable); ``per-channel``: three different
    stable kernels, one per RGB channel.
    """
    kh, kw = (size, size) if isinstance(size, int) else size
    if not (1 <= kh <= MAX_KERNEL_SIDE and 1 <= kw <= MAX_KERNEL_SIDE):
        raise KernelError(
            f"kernel size must be 1 to {MAX_KERNEL_SIDE} a side, got {kh}x{kw}"
        )
    if not (math.isfinite(ratio) and ratio > 0):
        raise KernelError(f"ratio must be a positive number, got {ratio}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise KernelError(f"sigma must be a positive number, got {sigma}")
    if kind == "diagonal":
        w = np.zeros((kh, kw))
        for t in range(min(kh, kw)):
            w[kh - 1 - t, kw - 1 - t] = ratio**t
    elif kind == "corner-gaussian":
        a = np.arange(kh)[::-1, None]
        b = np.arange(kw)[None, ::-1]
        w = np.exp(-(a**2 + b**2) / (2 * sigma**2))
    elif kind == "motion":
        w = (ratio ** np.arange(kw)[::-1])[None, :]
    elif kind == "gaussian":
        a = np.arange(kh)[:, None] - (kh - 1) / 2
        b = np.arange(kw)[None, :] - (kw - 1) / 2
        w = np.exp(-(a**2 + b**2) / (2 * sigma**2))
    elif kind == "per-channel":
        parts = [
            make_kernel("diagonal", (kh, kw), ratio=ratio).weights,
            make_kernel("corner-gaussian", (kh, kw), sigma=sigma * 0.8).weights,
            make_kernel("diagonal", (kh, kw), ratio=ratio * 0.7).weights,
        ]
        w = np.stack(parts)
    else:
        raise KernelError(
            f"unknown kernel kind {kind!r}; choose one of {', '.join(KERNEL_KINDS)}"
        )
    if w.ndim == 2:
        w = w / w.sum()
    if kind == "gaussian":
        return Kernel(w, "center")
    dims = flip_dims(anchor)
    if dims:
        w = np.flip(w, axis=tuple(d % w.ndim for d in dims)).copy()
    return Kernel(w, anchor)
