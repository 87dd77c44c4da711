"""Learning a causal blur kernel (PSF) from pairs of blurred and sharp images.

Two stages (DESIGN.md sections 1 and 6):

1. :func:`lstsq_kernel`, a linear least-squares fit of the forward model
   ``causal_conv2d(sharp, K) ~ blurred``.  Its normal equations are built from
   correlations of the sharp image with itself and with the blurred image,
   accumulated image by image, so memory stays ``O(k^4)`` whatever the number
   and size of the images.
2. :func:`fit_kernel`, which starts there (or at the identity) and refines
   the kernel by gradient descent *through the exact inverse*: it minimises
   the error of ``inverse_causal_conv2d(blurred, K)`` against ``sharp`` on
   random crops, the objective a deblurring user cares about.  On noisy or
   quantised data the two differ: the inverse amplifies noise by the kernel's
   gain, which the forward fit does not see.

Both work in the canonical frame (anchor bottom-right): images and kernels are
flipped in, and the kernel is flipped back out.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .kernel import Kernel, Stability, stability
from .ops import inverse_causal_conv2d
from .ops.forms import check_anchor, flip_dims

__all__ = [
    "FitError",
    "FitResult",
    "ImagePair",
    "PairScore",
    "fit_kernel",
    "lstsq_kernel",
    "split_holdout",
]

INITS = ("lstsq", "identity")
BORDERS = ("sharp", "zero")
OPTIMIZERS = ("lbfgs", "adam")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 1e-3}

#: the anchor tap may not shrink below this share of the taps' absolute sum
ANCHOR_FLOOR = 0.05

#: the descent stops early after this many whole batches that left the kernel
#: unchanged (L-BFGS found each one's gradient already below its tolerance)
CONVERGED_BATCHES = 2

#: most loss evaluations of one L-BFGS line search
_LINE_SEARCH_EVALS = 20

#: gather at most this many numbers of patches at once in the normal equations
_STRIP_NUMBERS = 1 << 21


class FitError(ValueError):
    """Pairs or options that a fit cannot use; the message is one line."""


@dataclass(frozen=True)
class ImagePair:
    """One training example: a blurred image and the sharp image it came from.

    Parameters
    ----------
    blurred, sharp : (H, W) or (H, W, C) float ndarray
        Same shape; values on the [0, 1] scale (what
        :func:`deblur.imageio.read_image` returns).
    name : str
        What reports call the pair (its relative path).
    """

    blurred: np.ndarray
    sharp: np.ndarray
    name: str = ""


@dataclass(frozen=True)
class PairScore:
    """PSNR (dB, ``data_range`` 1) of one pair against its sharp image."""

    name: str
    psnr_blurred: float
    psnr_lstsq: float
    psnr_refined: float


@dataclass
class FitResult:
    """What :func:`fit_kernel` learnt and how well it restores.

    Attributes
    ----------
    kernel : (kh, kw) or (C, kh, kw) ndarray
        The refined kernel, anchor in the ``anchor`` corner.
    kernel_lstsq : ndarray
        The least-squares fit of the forward model, same shape.
    anchor : str
    losses : list of float
        Training loss (mean squared error on the crops) at each step; fewer
        than ``num_steps`` when the descent stopped early, converged.
    train, holdout : list of PairScore
        PSNR of the blurred image, of the image restored with the least-squares
        kernel and of the image restored with the refined kernel.
    stability, stability_lstsq : Stability
        Noise gain and verdict of the refined and of the least-squares kernel.
    rejected_steps : int
        Steps undone because they made the kernel unstable or the loss
        non-finite (each halves the learning rate).
    final_lr : float
        The learning rate after those halvings.
    selected : {"last", "average", "start"}
        Which candidate became ``kernel``: the descent's last kernel, its
        average over the second half, or the start (see Notes of
        :func:`fit_kernel`).
    settings : dict
        The options the fit ran with (crop as used, margin as rows and
        columns), for the report.
    notes : list of str
        What the fit changed on its own (for example a start from the identity
        because the least-squares kernel was unstable).
    """

    kernel: np.ndarray
    kernel_lstsq: np.ndarray
    anchor: str
    losses: list[float] = field(default_factory=list)
    train: list[PairScore] = field(default_factory=list)
    holdout: list[PairScore] = field(default_factory=list)
    stability: Stability | None = None
    stability_lstsq: Stability | None = None
    rejected_steps: int = 0
    final_lr: float = 0.0
    selected: str = "last"
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_kernel(self) -> Kernel:
        """The refined kernel as a :class:`deblur.kernel.Kernel`."""
        return Kernel(self.kernel, self.anchor)


# --- inputs -----------------------------------------------------------------


def _as_pair(item, index: int) -> ImagePair:
    if isinstance(item, ImagePair):
        pair = item
    elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
        name = str(item[2]) if len(item) == 3 else f"pair {index}"
        pair = ImagePair(np.asarray(item[0]), np.asarray(item[1]), name)
    else:
        raise TypeError(
            f"pairs[{index}] must be an ImagePair or a (blurred, sharp) tuple of "
            f"arrays, got {type(item).__name__}"
        )
    name = pair.name or f"pair {index}"
    blurred, sharp = np.asarray(pair.blurred), np.asarray(pair.sharp)
    for role, a in (("blurred", blurred), ("sharp", sharp)):
        if a.ndim not in (2, 3) or a.dtype.kind not in "fiu":
            raise FitError(
                f"{name}: {role} image must be a numeric (H, W) or (H, W, C) "
                f"array, got {a.dtype} of shape {a.shape}"
            )
    if blurred.shape != sharp.shape:
        raise FitError(
            f"{name}: blurred image is {_shape_text(blurred)} but sharp image is "
            f"{_shape_text(sharp)}; pairs must have the same size and channels"
        )
    return ImagePair(blurred, sharp, name)


def _shape_text(a: np.ndarray) -> str:
    H, W = a.shape[:2]
    C = 1 if a.ndim == 2 else a.shape[2]
    return f"{W}x{H}x{C} (W x H x C)"


def _planes(a: np.ndarray, anchor: str) -> np.ndarray:
    """``(H, W[, C])`` -> ``(C, H, W)`` float64 in the canonical frame."""
    a = np.asarray(a, dtype=np.float64)
    a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
    dims = flip_dims(anchor)
    if dims:
        a = np.flip(a, axis=dims)
    return np.ascontiguousarray(a)


def _uncanonical(kernel: np.ndarray, anchor: str) -> np.ndarray:
    dims = flip_dims(anchor)
    return np.ascontiguousarray(np.flip(kernel, axis=dims) if dims else kernel)


def _kernel_size(kernel_size) -> tuple[int, int]:
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    if int(kh) < 1 or int(kw) < 1:
        raise FitError(f"kernel_size must be positive, got {kernel_size!r}")
    return int(kh), int(kw)


def _margin(margin, kh: int, kw: int) -> tuple[int, int]:
    if margin is None:
        return kh, kw
    mr, mc = (margin, margin) if isinstance(margin, int) else margin
    if mr < 0 or mc < 0:
        raise FitError(f"margin must be zero or positive, got {margin!r}")
    return int(mr), int(mc)


def _channels(pairs: list[ImagePair], per_channel: bool) -> int | None:
    if not per_channel:
        return None
    counts = {1 if p.sharp.ndim == 2 else p.sharp.shape[2] for p in pairs}
    if len(counts) != 1:
        raise FitError(
            f"per_channel needs pairs with one channel count, got {sorted(counts)}; "
            "fit a shared (kh, kw) kernel or convert the images first"
        )
    return counts.pop()


def split_holdout(pairs: Sequence, holdout: float, seed: int = 0) -> tuple[list, list]:
    """Split ``pairs`` into training and held-out pairs, reproducibly.

    Parameters
    ----------
    pairs : sequence
    holdout : int or float
        A number of pairs (``int``, ``>= 1``) or a fraction of them
        (``0 <= holdout < 1``, rounded to the nearest count).
    seed : int
        The held-out pairs are a random choice drawn with this seed.

    Returns
    -------
    train, held_out : list
        Both keep the input order.

    Raises
    ------
    FitError
        If fewer than one pair would be left for training.
    """
    n = len(pairs)
    if isinstance(holdout, float) and not float(holdout).is_integer():
        if not 0.0 <= holdout < 1.0:
            raise FitError(
                f"holdout must be a count or a fraction in [0, 1), got {holdout}"
            )
        count = round(holdout * n)
    else:
        count = int(holdout)
    if count < 0 or count >= n:
        raise FitError(
            f"holdout of {holdout} leaves {n - count} of {n} pairs for training; "
            "hold out fewer pairs or give more"
        )
    chosen = set(np.random.default_rng(seed).permutation(n)[:count].tolist())
    train = [p for i, p in enumerate(pairs) if i not in chosen]
    held = [p for i, p in enumerate(pairs) if i in chosen]
    return train, held


# --- stage 1: least squares on the forward model ----------------------------


def _accumulate(
    gram: np.ndarray,
    rhs: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    kh: int,
    kw: int,
    mr: int,
    mc: int,
) -> int:
    """Add one plane's correlations to ``gram`` and ``rhs``; return pixels used.

    ``gram[(a, b), (a', b')] += sum_ij x_pad[i + a, j + b] x_pad[i + a', j + b']``
    and ``rhs[(a, b)] += sum_ij x_pad[i + a, j + b] y[i, j]`` over the output
    pixels ``i >= mr``, ``j >= mc``; gathered a strip of rows at a time.
    """
    H, W = x.shape
    if H <= mr or W <= mc:
        return 0
    padded = np.pad(x, ((kh - 1, 0), (kw - 1, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw))
    cols = W - mc
    rows = max(1, _STRIP_NUMBERS // (cols * kh * kw))
    for i0 in range(mr, H, rows):
        i1 = min(H, i0 + rows)
        # torch's matmul, which copes with busy cores better than numpy's BLAS
        patches = torch.from_numpy(windows[i0:i1, mc:W].reshape(-1, kh * kw))
        target = torch.from_numpy(np.ascontiguousarray(y[i0:i1, mc:W]).reshape(-1))
        gram += (patches.T @ patches).numpy()
        rhs += (patches.T @ target).numpy()
    return (H - mr) * cols


def _lstsq_canonical(
    planes: list[tuple[np.ndarray, np.ndarray]],
    C: int | None,
    kh: int,
    kw: int,
    mr: int,
    mc: int,
) -> np.ndarray:
    """Solve the normal equations; ``planes`` holds ``(sharp, blurred)`` (C, H, W)."""
    k2 = kh * kw
    groups = 1 if C is None else C
    gram = np.zeros((groups, k2, k2))
    rhs = np.zeros((groups, k2))
    used = 0
    for x, y in planes:
        for c in range(x.shape[0]):
            g = 0 if C is None else c
            used += _accumulate(gram[g], rhs[g], x[c], y[c], kh, kw, mr, mc)
    if used == 0:
        raise FitError(
            f"no pixel is left for the fit: every image is at most {mr} rows or "
            f"{mc} columns, the margin; use a smaller margin or larger images"
        )

    out = np.empty((groups, k2))
    for g in range(groups):
        solution, _, rank, _ = np.linalg.lstsq(gram[g], rhs[g], rcond=None)
        if rank < k2:
            warnings.warn(
                f"the sharp images determine only {rank} of the {k2} taps of a "
                f"{kh}x{kw} kernel (too little texture); the fit is the "
                "minimum-norm solution: use more varied images or a smaller size",
                stacklevel=3,
            )
        out[g] = solution
    out = out.reshape(groups, kh, kw)
    return out[0] if C is None else out


def lstsq_kernel(
    pairs: Sequence,
    kernel_size: int | tuple[int, int],
    per_channel: bool = False,
    anchor: str = "bottom-right",
    margin: int | tuple[int, int] | None = None,
) -> np.ndarray:
    """Fit a causal kernel to pairs by linear least squares on the forward model.

    Minimises ``sum ||causal_conv2d(sharp, K) - blurred||^2`` over the output
    pixels outside the ``margin``, which is linear in ``K``.

    Parameters
    ----------
    pairs : sequence of ImagePair or (blurred, sharp) tuples
        Arrays ``(H, W)`` or ``(H, W, C)``, blurred and sharp of one shape.
    kernel_size : int or (kh, kw)
    per_channel : bool
        Fit one kernel per channel, ``(C, kh, kw)``, instead of one shared
        ``(kh, kw)`` kernel.
    anchor : {"bottom-right", "bottom-left", "top-right", "top-left"}
        The corner of the kernel that holds the anchor tap.
    margin : int or (rows, cols), optional
        Output rows and columns left out on the anchor's side (top and left
        for a bottom-right anchor), where the blurred image depends on pixels
        outside the sharp one.  Default: the kernel size.  ``kh - 1, kw - 1``
        already keeps every product inside the image.

    Returns
    -------
    kernel : (kh, kw) or (C, kh, kw) float64 ndarray

    Raises
    ------
    FitError
        A ``ValueError``: if a pair's images differ in shape, per-channel
        pairs differ in channels, or the margin leaves no pixel.
    TypeError
        If an item of ``pairs`` is neither an ImagePair nor a tuple.

    Notes
    -----
    The normal equations ``G k = r`` are built from correlations,
    ``G[(a, b), (a', b')] = sum x_pad[i + a, j + b] x_pad[i + a', j + b']``
    and ``r[(a, b)] = sum x_pad[i + a, j + b] y[i, j]``, with ``x_pad`` the
    sharp image zero padded by ``kh - 1`` rows on top and ``kw - 1`` columns
    on the left.  They are accumulated plane by plane, a strip of rows at a
    time, so memory is ``O(k^4)`` plus one strip; the ``kh kw x kh kw`` system
    is then solved by ``numpy.linalg.lstsq`` (minimum norm if it is singular,
    with a warning).  On noise-free data blurred by the same operator the fit
    is exact to rounding.

    Examples
    --------
    >>> from deblur.ops import causal_conv2d
    >>> k = np.array([[0.1, 0.2], [0.0, 0.7]])
    >>> sharp = np.random.default_rng(0).random((32, 32))
    >>> blurred = causal_conv2d(torch.from_numpy(sharp)[None, None],
    ...                         torch.from_numpy(k))[0, 0].numpy()
    >>> np.allclose(lstsq_kernel([(blurred, sharp)], 2), k)
    True
    """
    check_anchor(anchor)
    kh, kw = _kernel_size(kernel_size)
    mr, mc = _margin(margin, kh, kw)
    items = [_as_pair(p, i) for i, p in enumerate(pairs)]
    if not items:
        raise FitError("pairs is empty; give at least one (blurred, sharp) pair")
    C = _channels(items, per_channel)

    planes = [(_planes(p.sharp, anchor), _planes(p.blurred, anchor)) for p in items]
    return _uncanonical(_lstsq_canonical(planes, C, kh, kw, mr, mc), anchor)


# --- stage 2: refinement through the inverse --------------------------------


def _is_stable(canon: np.ndarray) -> bool:
    """Stability of a canonical ``(Ck, kh, kw)`` kernel; cheap when dominant."""
    flat = np.abs(canon.reshape(canon.shape[0], -1))
    if np.all(flat[:, -1] > flat[:, :-1].sum(axis=1)):
        return True  # a dominant anchor is sufficient
    if np.any(canon[:, -1, -1] == 0) or not np.all(np.isfinite(canon)):
        return False
    weights = canon[0] if canon.shape[0] == 1 else canon
    return stability(Kernel(weights)).stable


def _identity(Ck: int, kh: int, kw: int) -> np.ndarray:
    k = np.zeros((Ck, kh, kw))
    k[:, -1, -1] = 1.0
    return k


@contextlib.contextmanager
def _threads(count: int | None):
    """Run torch and numba on ``count`` CPU threads, then restore their settings."""
    if count is None:
        yield
        return
    import numba

    before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(count)
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


def _crops(
    images: list[torch.Tensor],
    picks: list[tuple[int, int, int]],
    height: int,
    width: int,
    per_channel: bool,
) -> torch.Tensor:
    """Stack crops ``(n, i0, j0)`` of ``(C, H, W)`` images into a batch.

    Per-channel kernels keep each crop's channels together, ``(B, C, h, w)``;
    a shared kernel sees planes, ``(B * C, 1, h, w)``, so gray and colour
    pairs can share a batch.
    """
    parts = [images[n][:, i : i + height, j : j + width] for n, i, j in picks]
    if per_channel:
        return torch.stack(parts)
    return torch.cat(parts)[:, None]


def _windows(
    images: list[torch.Tensor],
    picks: list[tuple[int, int, int]],
    height: int,
    width: int,
    kernel_size: tuple[int, int],
    per_channel: bool,
) -> torch.Tensor:
    """The sharp crops widened by ``kh - 1`` rows above and ``kw - 1`` columns left.

    Zero outside the image, and the crop itself zeroed: what is left is the
    sharp pixels outside each crop that its blurred pixels depend on.
    """
    kh, kw = kernel_size
    parts = []
    for n, i, j in picks:
        top, left = i - (kh - 1), j - (kw - 1)
        piece = images[n][:, max(top, 0) : i + height, max(left, 0) : j + width]
        parts.append(F.pad(piece, (max(-left, 0), 0, max(-top, 0), 0)))
    windows = torch.stack(parts) if per_channel else torch.cat(parts)[:, None]
    windows[..., kh - 1 :, kw - 1 :] = 0.0
    return windows


def _border_correction(windows: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """What the sharp pixels above and left of each crop add to its blurred pixels.

    ``windows`` ``(B, C, h + kh - 1, w + kw - 1)`` come from :func:`_windows`;
    their blur is the part of the blurred crops that the inverse of a crop
    alone cannot explain.  It is non-zero on the
    crop's first ``kh - 1`` rows and ``kw - 1`` columns only, so only those
    two strips are convolved.
    """
    kh, kw = kernel.shape[-2:]
    B, C, Hw, Ww = windows.shape
    h, w = Hw - kh + 1, Ww - kw + 1
    weight = kernel.expand(C, kh, kw).unsqueeze(1)
    parts = []
    if kh > 1:
        parts.append(F.conv2d(windows[..., : 2 * (kh - 1), :], weight, groups=C))
    if kw > 1:
        left = F.conv2d(windows[..., kh - 1 :, : 2 * (kw - 1)], weight, groups=C)
        parts.append(F.pad(left, (0, w - (kw - 1))))
    else:
        parts.append(windows.new_zeros(B, C, h - (kh - 1), w))
    return torch.cat(parts, dim=-2)


class _Batches:
    """Random crops of the training pairs and the loss on them."""

    def __init__(
        self,
        train,
        crop,
        batch,
        margin,
        kernel_size,
        border,
        device,
        dtype,
        per_channel,
    ):
        self.kh, self.kw = kernel_size
        self.mr, self.mc = margin
        self.batch, self.border, self.per_channel = batch, border, per_channel
        self.h = min(crop, *(x.shape[1] for x, _ in train))
        self.w = min(crop, *(x.shape[2] for x, _ in train))
        self.sharp = [torch.from_numpy(x).to(device, dtype) for x, _ in train]
        self.blurred = [torch.from_numpy(y).to(device, dtype) for _, y in train]

    def draw(self, rng: np.random.Generator):
        """Pick ``batch`` crops: blurred, sharp and (for ``border="sharp"``) windows."""
        h, w, kh, kw = self.h, self.w, self.kh, self.kw
        picks = []
        for n in rng.integers(len(self.sharp), size=self.batch).tolist():
            H, W = self.sharp[n].shape[1:]
            picks.append(
                (n, int(rng.integers(H - h + 1)), int(rng.integers(W - w + 1)))
            )
        blurred = _crops(self.blurred, picks, h, w, self.per_channel)
        sharp = _crops(self.sharp, picks, h, w, self.per_channel)
        windows = None
        if self.border == "sharp":
            windows = _windows(self.sharp, picks, h, w, (kh, kw), self.per_channel)
        return blurred, sharp, windows

    def loss(self, kernel: torch.Tensor, blurred, sharp, windows) -> torch.Tensor:
        """Mean squared error of the restored crops outside the margin."""
        if windows is not None:
            blurred = blurred - _border_correction(windows, kernel)
        error = inverse_causal_conv2d(blurred, kernel) - sharp
        return error[..., self.mr :, self.mc :].square().mean()


def _optimizer(name: str, kernel: torch.Tensor, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam([kernel], lr=lr)
    # one iteration per step() call, the curvature history kept in its state;
    # max_eval bounds the line search's evaluations within that iteration
    return torch.optim.LBFGS(
        [kernel],
        lr=lr,
        max_iter=1,
        max_eval=1 + _LINE_SEARCH_EVALS,
        history_size=10,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
    )


def _descend(
    start: np.ndarray,
    batches: _Batches,
    *,
    optimizer: str,
    num_steps: int,
    lr: float,
    every: int,
    check_every: int,
    seed: int,
    device,
    dtype,
    callback,
) -> tuple[np.ndarray, np.ndarray | None, list[float], int, float]:
    """Minimise the crop loss from ``start``.

    Stops early when ``CONVERGED_BATCHES`` whole batches in a row left the
    kernel unchanged.  Returns the last kernel that passed a stability check,
    the average of the kernels at the end of each batch over the second half
    (``None`` with fewer than two), the losses, the number of rejected steps
    and the final learning rate.
    """
    kernel = torch.tensor(start, dtype=dtype, device=device, requires_grad=True)
    sign = torch.sign(kernel.detach()[:, -1, -1])
    rng = np.random.default_rng(seed)
    last_good = kernel.detach().clone()
    losses: list[float] = []
    scale, rejected, opt, data = 1.0, 0, None, None
    tail, tail_count = torch.zeros_like(last_good), 0
    batch_start, unmoved = last_good, 0

    for step in range(num_steps):
        if step % every == 0:
            # converged: the optimiser left the kernel as it was on whole batches
            if step:
                same = torch.equal(kernel.detach(), batch_start)
                unmoved = unmoved + 1 if same else 0
                if unmoved >= CONVERGED_BATCHES:
                    break
            batch_start = kernel.detach().clone()
            data = batches.draw(rng)
            if optimizer == "lbfgs":
                opt = None  # a new objective: drop the curvature history
        if opt is None:
            opt = _optimizer(optimizer, kernel, scale * lr)
        if optimizer == "adam":
            cosine = 0.5 * (1.0 + math.cos(math.pi * step / num_steps))
            opt.param_groups[0]["lr"] = scale * lr * cosine

        def closure(opt=opt, data=data):
            opt.zero_grad()
            loss = batches.loss(kernel, *data)
            loss.backward()
            return loss

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            value = float(opt.step(closure).detach())
        losses.append(value)

        # keep the anchor away from zero, on its side
        good = math.isfinite(value) and bool(torch.isfinite(kernel).all())
        if good:
            with torch.no_grad():
                floor = ANCHOR_FLOOR * kernel.abs().sum(dim=(-2, -1))
                low = sign * kernel[:, -1, -1] < floor
                if bool(low.any()):
                    kernel[:, -1, -1] = torch.where(
                        low, sign * floor, kernel[:, -1, -1]
                    )
                    opt = None if optimizer == "lbfgs" else opt

        # keep the kernel stable: go back to the last one that passed
        if good and ((step + 1) % check_every == 0 or step + 1 == num_steps):
            good = _is_stable(kernel.detach().to("cpu", torch.float64).numpy())
            if good:
                last_good = kernel.detach().clone()
        if not good:
            rejected += 1
            scale *= 0.5
            with torch.no_grad():
                kernel.copy_(last_good)
            opt = None
        # the batches' kernels over the second half, averaged
        if good and (step + 1) % every == 0 and 2 * (step + 1) > num_steps:
            tail += kernel.detach()
            tail_count += 1
        if callback is not None:
            callback(step + 1, value, _loss_psnr(value))

    if len(losses) < num_steps and _is_stable(kernel.detach().cpu().double().numpy()):
        last_good = kernel.detach().clone()
    last = last_good.to("cpu", torch.float64).numpy()
    average = None
    if tail_count > 1:
        average = (tail / tail_count).to("cpu", torch.float64).numpy()
    return last, average, losses, rejected, scale * lr


def _psnr(sharp: np.ndarray, image: np.ndarray) -> float:
    from .metrics import psnr

    if not np.all(np.isfinite(image)):
        return float("nan")
    return float(psnr(sharp, image, data_range=1.0))


def _loss_psnr(mse: float) -> float:
    if not math.isfinite(mse):
        return float("nan")
    return 10.0 * math.log10(1.0 / mse) if mse > 0 else float("inf")


def _restore(blurred: np.ndarray, canon: np.ndarray, device, dtype) -> np.ndarray:
    y = torch.from_numpy(blurred)[None].to(device=device, dtype=dtype)
    # a shared kernel is (1, kh, kw) here; 2-D it serves any number of channels
    k = torch.from_numpy(canon[0] if canon.shape[0] == 1 else canon)
    k = k.to(device=device, dtype=dtype)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return inverse_causal_conv2d(y, k)[0].to("cpu", torch.float64).numpy()


def _evaluate(canon_pairs, canon, margin, device, dtype) -> tuple[float, list[float]]:
    """Restore whole images with ``canon``: the loss, and each pair's PSNR.

    The loss is the mean squared error outside the margin, over all pairs'
    pixels (the objective of the descent, on whole images); the PSNRs are of
    the restorations clipped to [0, 1], as an image file would hold them.
    """
    mr, mc = margin
    total, count, psnrs = 0.0, 0, []
    for x, y in canon_pairs:
        restored = _restore(y, canon, device, dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            total += float(np.square(restored - x)[:, mr:, mc:].sum())
            count += restored[:, mr:, mc:].size
            psnrs.append(_psnr(x, np.clip(restored, 0.0, 1.0)))
    loss = total / count if count else 0.0
    return (loss if math.isfinite(loss) else math.inf), psnrs


def fit_kernel(
    pairs: Sequence,
    kernel_size: int | tuple[int, int],
    *,
    per_channel: bool = False,
    anchor: str = "bottom-right",
    num_steps: int = 100,
    lr: float | None = None,
    crop: int = 64,
    batch: int = 16,
    margin: int | tuple[int, int] | None = None,
    init: str = "lstsq",
    optimizer: str = "lbfgs",
    seed: int = 0,
    device: str | torch.device = "cpu",
    holdout: Sequence = (),
    border: str = "sharp",
    resample_every: int | None = None,
    check_every: int = 10,
    threads: int | None = 1,
    dtype: torch.dtype | None = None,
    callback: Callable[[int, float, float], None] | None = None,
) -> FitResult:
    """Learn a causal kernel from pairs: least squares, then descent through the inverse.

    Parameters
    ----------
    pairs : sequence of ImagePair or (blurred, sharp[, name]) tuples
        Training pairs, arrays ``(H, W)`` or ``(H, W, C)`` on the [0, 1] scale.
    kernel_size : int or (kh, kw)
    per_channel : bool
        Learn ``(C, kh, kw)``, one kernel per channel, instead of ``(kh, kw)``.
    anchor : {"bottom-right", "bottom-left", "top-right", "top-left"}
    num_steps : int
        Most optimiser steps (L-BFGS iterations or Adam steps); the descent
        stops earlier once whole batches leave the kernel unchanged.  0 keeps
        the start.
    lr : float, optional
        L-BFGS: the first trial step of each line search (default 1).  Adam:
        the peak learning rate in kernel taps per step (default 1e-3), with a
        cosine decay to zero over ``num_steps``.
    crop : int
        Side of the random square crops (shortened to fit small images).
    batch : int
        Crops per batch, drawn from random training pairs.
    margin : int or (rows, cols), optional
        Rows and columns on the anchor's side of each crop that the loss
        leaves out.  Default: the kernel size.
    init : {"lstsq", "identity"}
        Start from :func:`lstsq_kernel` or from the identity (a lone anchor).
    optimizer : {"lbfgs", "adam"}
    seed : int
        Seed of the crop positions; the same seed gives the same kernel.
    device : str or torch.device
        Where to solve, for example ``"cpu"`` or ``"cuda"``.
    holdout : sequence, optional
        Pairs scored at the end but never trained on.
    border : {"sharp", "zero"}
        What the inverse assumes above and left of a crop.  ``"sharp"``
        subtracts what the sharp pixels there add to the crop's blurred pixels
        (exact under the model, so the loss is zero at the true kernel of
        noise-free pairs); ``"zero"`` treats them as zero and relies on the
        margin alone, which biases the fit by the tail of the inverse's
        impulse response (a relative error of 1e-3 for a 5x5 corner Gaussian
        of gain 8).  With ``"sharp"`` the margin matters only for crops at
        the image's own top and left edges, where the pixels outside are
        unknown.
    resample_every : int, optional
        Steps on one batch of crops before a new one is drawn.  Default 10 for
        L-BFGS (which restarts its curvature history on each batch), 1 for
        Adam.
    check_every : int
        Steps between stability checks of the kernel being learnt.
    threads : int or None
        CPU threads for torch and numba while fitting, restored afterwards;
        ``None`` keeps the process's settings.  The default 1 suits the small
        solves of a batch of crops, which threads slow down more than they
        speed up (seven times slower on two busy cores).
    dtype : torch.dtype, optional
        Default float64 on the CPU, float32 elsewhere.
    callback : callable, optional
        ``callback(step, loss, psnr)`` after each step (``step`` counts from
        1; ``psnr`` is the loss as a PSNR in dB for ``data_range`` 1).

    Returns
    -------
    FitResult

    Raises
    ------
    FitError
        A ``ValueError``: bad option values, pairs that differ in shape, a
        crop no larger than the margin, an empty training set.
    ValueError
        An anchor that is not a corner (from :func:`deblur.ops.forms.check_anchor`).

    Notes
    -----
    The loss is the mean squared error between ``inverse_causal_conv2d`` of
    each blurred crop and the sharp crop, outside the margin.  It is badly
    conditioned: the kernel's sum (the image's brightness) is pinned hard,
    the shape of its tail loosely.  L-BFGS copes with that and is the
    default; from the identity on noise-free pairs it reaches the true kernel
    where Adam, which rescales each tap but not the directions that mix
    them, stalls far from it.  On noisy pairs L-BFGS also gains the most over
    the least-squares start, which the inverse's noise gain penalises.

    Two guards keep the kernel invertible and stable: after each step the
    anchor is held at or above ``ANCHOR_FLOOR`` times the taps' absolute sum,
    with its sign kept; every ``check_every`` steps the kernel's stability is
    checked (at once when the anchor dominates the other taps, else with
    :func:`deblur.kernel.stability`).  A kernel that turned unstable, or a
    non-finite loss, goes back to the last kernel that passed a check, the
    optimiser restarts and the learning rate halves.  A least-squares start
    that is unstable is replaced by the identity (see ``FitResult.notes``).

    Each batch of crops pulls the kernel towards that batch's optimum, so
    the kernels at the ends of the batches of the second half are also
    averaged.  The result is whichever of the last kernel, that average and
    the start restores the whole training images best (the same loss, on
    whole images): the average wins on noisy pairs, the last kernel when the
    descent is still converging, and the start only if the descent failed.

    The restored images are clipped to [0, 1] before they are scored; PSNRs
    use ``data_range`` 1 (the same number as on the 0-255 scale).

    Examples
    --------
    >>> from deblur.kernel import make_kernel
    >>> from deblur.ops import causal_conv2d
    >>> k = make_kernel("diagonal", 3).weights
    >>> sharp = np.random.default_rng(0).random((48, 48))
    >>> blurred = causal_conv2d(torch.from_numpy(sharp)[None, None],
    ...                         torch.from_numpy(k))[0, 0].numpy()
    >>> result = fit_kernel([(blurred, sharp)], 3, num_steps=5, crop=32)
    >>> bool(np.abs(result.kernel - k).max() < 1e-9)
    True
    """
    check_anchor(anchor)
    kh, kw = _kernel_size(kernel_size)
    mr, mc = _margin(margin, kh, kw)
    for name, value, choices in (
        ("init", init, INITS),
        ("border", border, BORDERS),
        ("optimizer", optimizer, OPTIMIZERS),
    ):
        if value not in choices:
            raise FitError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    every = resample_every or (10 if optimizer == "lbfgs" else 1)
    if num_steps < 0 or min(batch, check_every, every, crop) < 1:
        raise FitError(
            "num_steps must be >= 0 and crop, batch, check_every, resample_every "
            f">= 1, got num_steps={num_steps}, crop={crop}, batch={batch}, "
            f"check_every={check_every}, resample_every={every}"
        )
    lr = DEFAULT_LR[optimizer] if lr is None else float(lr)
    if not (lr > 0 and math.isfinite(lr)):
        raise FitError(f"lr must be a positive number, got {lr}")
    if threads is not None and threads < 1:
        raise FitError(f"threads must be >= 1 or None, got {threads}")
    items = [_as_pair(p, i) for i, p in enumerate(pairs)]
    held = [_as_pair(p, i) for i, p in enumerate(holdout)]
    if not items:
        raise FitError("no training pairs; give at least one (blurred, sharp) pair")
    C = _channels(items + held, per_channel)
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float64 if device.type == "cpu" else torch.float32

    train = [(_planes(p.sharp, anchor), _planes(p.blurred, anchor)) for p in items]
    tests = [(_planes(p.sharp, anchor), _planes(p.blurred, anchor)) for p in held]
    batches = _Batches(
        train, crop, batch, (mr, mc), (kh, kw), border, device, dtype, C is not None
    )
    if num_steps and (batches.h <= mr or batches.w <= mc):
        raise FitError(
            f"crops of {batches.h}x{batches.w} leave nothing outside the margin "
            f"of {mr} rows and {mc} columns; use a larger crop (or images), or a "
            "smaller margin"
        )

    with _threads(threads):
        # the start
        lstsq = _lstsq_canonical(train, C, kh, kw, mr, mc)
        lstsq = lstsq[None] if C is None else lstsq
        notes = []
        start = lstsq if init == "lstsq" else _identity(lstsq.shape[0], kh, kw)
        if not _is_stable(start):
            notes.append(
                "the least-squares kernel is unstable for the exact inverse; the "
                "descent started from the identity"
            )
            start = _identity(lstsq.shape[0], kh, kw)

        # the descent
        last, average, losses, rejected, final_lr = _descend(
            start,
            batches,
            optimizer=optimizer,
            num_steps=num_steps,
            lr=lr,
            every=every,
            check_every=check_every,
            seed=seed,
            device=device,
            dtype=dtype,
            callback=callback,
        )

        # the result: whichever of the last kernel, the average and the start
        # restores the whole training images best
        def evaluate(canon, pairs=train):
            return _evaluate(pairs, canon, (mr, mc), device, dtype)

        fit_lstsq = evaluate(lstsq)
        candidates = [(evaluate(last), 0, last)]
        if average is not None and _is_stable(average):
            candidates.append((evaluate(average), 1, average))
        same_start = start is lstsq
        candidates.append((fit_lstsq if same_start else evaluate(start), 2, start))
        (_, train_refined), chosen, refined = min(candidates, key=lambda c: c[0][0])
        selected = ("last", "average", "start")[chosen]
        if chosen == 2 and num_steps:
            notes.append(
                "the descent did not improve on its start over the whole training "
                "images; the start was kept"
            )

        # scores on whole images, and the kernels in the user's frame
        train_scores = [
            PairScore(p.name, _psnr(x, y), a, b)
            for p, (x, y), a, b in zip(items, train, fit_lstsq[1], train_refined)
        ]
        held_lstsq = evaluate(lstsq, tests)[1]
        held_refined = evaluate(refined, tests)[1]
        held_scores = [
            PairScore(p.name, _psnr(x, y), a, b)
            for p, (x, y), a, b in zip(held, tests, held_lstsq, held_refined)
        ]
        final = _uncanonical(refined[0] if C is None else refined, anchor)
        start_fit = _uncanonical(lstsq[0] if C is None else lstsq, anchor)
        verdicts = (
            stability(Kernel(final, anchor)),
            stability(Kernel(start_fit, anchor)),
        )

    settings = {
        "kernel_size": [kh, kw],
        "per_channel": per_channel,
        "anchor": anchor,
        "num_steps": num_steps,
        "lr": lr,
        "crop": [batches.h, batches.w],
        "batch": batch,
        "margin": [mr, mc],
        "init": init,
        "optimizer": optimizer,
        "seed": seed,
        "border": border,
        "resample_every": every,
        "dtype": str(dtype).replace("torch.", ""),
        "device": str(device),
    }
    return FitResult(
        kernel=final,
        kernel_lstsq=start_fit,
        anchor=anchor,
        losses=losses,
        train=train_scores,
        holdout=held_scores,
        stability=verdicts[0],
        stability_lstsq=verdicts[1],
        rejected_steps=rejected,
        final_lr=final_lr,
        selected=selected,
        settings=settings,
        notes=notes,
    )
