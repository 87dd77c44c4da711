"""Pictures of kernels, restorations and fits, written as PNG files.

Each function draws on its own :class:`matplotlib.figure.Figure` (no pyplot
state, so it is safe in threads and never opens a window) and writes the file
atomically: a reader sees the old picture or the new one, never half of one.
The pixel size of every picture is fixed by :data:`DPI` and the panel sizes
below, so it is known in advance:

- :func:`plot_kernel`: ``KERNEL_PANEL`` inches per kernel panel;
- :func:`plot_comparison`: ``IMAGE_PANEL`` inches per image, one row;
- :func:`plot_fit`: the kernel panels and one ``KERNEL_PANEL`` loss panel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .atomic import atomic_path
from .baselines import BASELINE_ANCHORS

__all__ = [
    "DPI",
    "IMAGE_PANEL",
    "KERNEL_PANEL",
    "figure_size",
    "plot_comparison",
    "plot_fit",
    "plot_kernel",
]

#: dots per inch of every picture
DPI = 100

#: (width, height) in inches of one kernel or loss-curve panel
KERNEL_PANEL = (3.6, 3.4)

#: (width, height) in inches of one image of a comparison
IMAGE_PANEL = (4.0, 4.4)

#: write tap values into the cells up to this many taps per panel
_MAX_LABELLED_TAPS = 81


def figure_size(kind: str, panels: int, rows: int = 1) -> tuple[int, int]:
    """Return the (width, height) in pixels of a picture.

    Parameters
    ----------
    kind : {"kernel", "comparison", "fit"}
        Which function draws it.
    panels : int
        Number of panels: kernel planes for "kernel" and "fit" (the loss
        curve adds one to "fit"), images for "comparison".
    rows : int, default 1
        Rows of kernel panels: ``C`` for a ``(C, C, kh, kw)`` kernel, which
        :func:`plot_kernel` draws as a ``C x C`` grid; 1 otherwise.

    Returns
    -------
    size : (int, int)
        Width and height, as Pillow reports them.

    Examples
    --------
    >>> figure_size("kernel", 3)
    (1080, 340)
    >>> figure_size("kernel", 9, rows=3)
    (1080, 1020)
    """
    if kind == "comparison":
        cols, rows, (w, h) = panels, 1, IMAGE_PANEL
    elif kind == "kernel":
        cols, (w, h) = math.ceil(panels / rows), KERNEL_PANEL
    elif kind == "fit":
        cols, rows, (w, h) = panels + 1, 1, KERNEL_PANEL
    else:
        raise ValueError(f"kind must be 'kernel', 'comparison' or 'fit', got {kind!r}")
    return round(cols * w * DPI), round(rows * h * DPI)


def plot_kernel(
    kernel: np.ndarray,
    path: str | os.PathLike,
    anchor: str = "bottom-right",
    gain: float | None = None,
    title: str | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Draw a kernel as a heat map, with its anchor tap outlined.

    Parameters
    ----------
    kernel : (kh, kw), (C, kh, kw) or (C, C, kh, kw) ndarray
        Blur kernel (PSF) in deblur's convention; one panel per channel in a
        row, a ``C x C`` grid (rows: output, columns: input) for a
        channel-mixing kernel. See :func:`figure_size` for the pixel size.
    path : str or path-like
        The PNG file to write; its folder must exist.
    anchor : {"bottom-right", "bottom-left", "top-right", "top-left", "center"}
        The tap that multiplies the pixel itself, outlined in magenta.
    gain : float, optional
        The noise gain of the exact inverse, shown in the title.
    title : str, optional
        First line of the title; "kernel" by default.
    overwrite : bool, default True
        Replace an existing file; with False an existing `path` raises
        ``FileExistsError``.

    Raises
    ------
    ValueError
        If the kernel is not 2-, 3- or 4-dimensional, is empty or not finite,
        or `anchor` is unknown.

    Notes
    -----
    Non-negative kernels use a sequential colour map from 0; kernels with a
    negative tap a diverging one centred on 0. Kernels with at most 81 taps
    per panel carry their values in the cells.
    """
    planes, labels = _kernel_planes(kernel)
    anchor_tap = _anchor_tap(planes[0].shape, anchor)
    rows = np.shape(kernel)[0] if np.ndim(kernel) == 4 else 1
    cols = len(planes) // rows
    fig = Figure(figsize=(cols * KERNEL_PANEL[0], rows * KERNEL_PANEL[1]), dpi=DPI)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, plane, label in zip(axes, planes, labels, strict=True):
        _draw_kernel(fig, ax, plane, anchor_tap, label)

    fig.suptitle(_kernel_title(kernel, anchor, gain, title), fontsize=10)
    fig.subplots_adjust(
        top=1 - 0.2 / rows,
        bottom=0.11 / rows,
        left=0.1,
        right=0.86,
        hspace=0.35,
        wspace=0.45,
    )
    _save(fig, path, overwrite)


def plot_comparison(
    panels: Sequence[tuple[str, np.ndarray]],
    path: str | os.PathLike,
    *,
    overwrite: bool = True,
) -> None:
    """Draw images side by side in one row, each under its label.

    Parameters
    ----------
    panels : list of (str, ndarray)
        Label (for example ``"wiener 31.2 dB"``) and image: float
        ``(H, W)``, ``(H, W, 1)`` (gray), ``(H, W, 3)`` or ``(H, W, 4)``
        (colour; alpha is not drawn), values in [0, 1]. The images may
        differ in size; each keeps its aspect ratio inside its panel.
    path : str or path-like
        The PNG file to write; its folder must exist.
    overwrite : bool, default True
        Replace an existing file; with False an existing `path` raises
        ``FileExistsError``.

    Raises
    ------
    ValueError
        If `panels` is empty or an image has a shape or values that cannot be
        drawn.
    TypeError
        If a panel is not a ``(label, image)`` pair.

    Notes
    -----
    Values outside [0, 1] are clipped for display only; NaN shows as black.
    """
    items = _check_panels(panels)
    fig = Figure(figsize=(len(items) * IMAGE_PANEL[0], IMAGE_PANEL[1]), dpi=DPI)
    axes = fig.subplots(1, len(items), squeeze=False)[0]
    for ax, (label, image) in zip(axes, items, strict=True):
        if image.shape[2] == 1:
            ax.imshow(image[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(image[:, :, :3])
        ax.set_title(label, fontsize=11)
        ax.set_axis_off()

    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92, wspace=0.04)
    _save(fig, path, overwrite)


def plot_fit(
    kernel: np.ndarray,
    losses: Sequence[float],
    path: str | os.PathLike,
    anchor: str = "bottom-right",
    gain: float | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Draw a learned kernel beside the loss curve of its fit.

    Parameters
    ----------
    kernel : (kh, kw) or (C, kh, kw) ndarray
        The fitted kernel; one heat map per channel.
    losses : sequence of float
        The loss after each optimiser step, drawn on a log scale (a linear
        one when a loss is not positive). May be empty: the panel then says
        that no step was taken.
    path : str or path-like
        The PNG file to write; its folder must exist.
    anchor : str
        As for :func:`plot_kernel`.
    gain : float, optional
        The noise gain of the kernel's exact inverse, shown in the title.
    overwrite : bool, default True
        Replace an existing file; with False an existing `path` raises
        ``FileExistsError``.

    Raises
    ------
    ValueError
        As for :func:`plot_kernel`, for a channel-mixing kernel, or for
        non-finite losses.
    """
    planes, labels = _kernel_planes(kernel)
    if np.ndim(kernel) == 4:
        raise ValueError(
            f"plot_fit draws (kh, kw) or (C, kh, kw) kernels, got shape "
            f"{np.shape(kernel)}; draw a channel-mixing kernel with plot_kernel"
        )
    losses = np.asarray(losses, dtype=np.float64).ravel()
    if not np.isfinite(losses).all():
        raise ValueError(
            f"losses must be finite, got {np.count_nonzero(~np.isfinite(losses))} "
            "NaN or infinite values; the fit diverged, try a smaller learning rate"
        )
    anchor_tap = _anchor_tap(planes[0].shape, anchor)

    fig = Figure(
        figsize=((len(planes) + 1) * KERNEL_PANEL[0], KERNEL_PANEL[1]), dpi=DPI
    )
    axes = fig.subplots(1, len(planes) + 1, squeeze=False)[0]
    for ax, plane, label in zip(axes[:-1], planes, labels, strict=True):
        _draw_kernel(fig, ax, plane, anchor_tap, label)
    _draw_losses(axes[-1], losses)

    fig.suptitle(_kernel_title(kernel, anchor, gain, "fitted kernel"), fontsize=10)
    fig.subplots_adjust(top=0.78, bottom=0.14, left=0.07, right=0.95, wspace=0.9)
    _save(fig, path, overwrite)


def _kernel_planes(kernel) -> tuple[list[np.ndarray], list[str]]:
    """Split a kernel into (kh, kw) planes with a label for each."""
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim not in (2, 3, 4) or kernel.size == 0:
        raise ValueError(
            "kernel must be (kh, kw), (C, kh, kw) or (C, C, kh, kw) and not empty, "
            f"got shape {kernel.shape}"
        )
    if not np.isfinite(kernel).all():
        raise ValueError("kernel holds NaN or infinite values; check the kernel file")
    if kernel.ndim == 2:
        return [kernel], [""]
    if kernel.ndim == 3:
        return list(kernel), [f"channel {c}" for c in range(kernel.shape[0])]
    C_out, C_in = kernel.shape[:2]
    planes = [kernel[o, i] for o in range(C_out) for i in range(C_in)]
    labels = [f"out {o} <- in {i}" for o in range(C_out) for i in range(C_in)]
    return planes, labels


def _anchor_tap(kernel_size: tuple[int, int], anchor: str) -> tuple[int, int]:
    """(row, column) of the anchor tap, as :func:`~deblur.baselines.psf_from_kernel`."""
    if anchor not in BASELINE_ANCHORS:
        raise ValueError(
            f"anchor must be one of {', '.join(BASELINE_ANCHORS)}, got {anchor!r}"
        )
    kh, kw = kernel_size
    if anchor == "center":
        return kh // 2, kw // 2
    return (kh - 1 if anchor.startswith("bottom") else 0), (
        kw - 1 if anchor.endswith("right") else 0
    )


def _kernel_title(kernel, anchor: str, gain: float | None, title: str | None) -> str:
    kernel = np.asarray(kernel, dtype=np.float64)
    kh, kw = kernel.shape[-2:]
    # one sum per output channel: over (kh, kw), and over the inputs if mixing
    if kernel.ndim == 2:
        sums = [kernel.sum()]
    else:
        sums = kernel.sum(axis=tuple(range(1, kernel.ndim)))
    sum_text = ", ".join(f"{s:.4g}" for s in sums)
    gain_text = "not given" if gain is None else f"{gain:.3g}"
    first = title or "kernel"
    return f"{first}: {kh}x{kw}, anchor {anchor}\nsum {sum_text}   gain {gain_text}"


def _draw_kernel(fig, ax, plane: np.ndarray, anchor_tap, label: str) -> None:
    """Heat map of one plane, anchor outlined, values in the cells if small."""
    kh, kw = plane.shape
    peak = float(np.abs(plane).max()) or 1.0
    if plane.min() < 0:
        cmap, vmin, vmax = "RdBu_r", -peak, peak
    else:
        cmap, vmin, vmax = "viridis", 0.0, peak
    image = ax.imshow(plane, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)

    row, col = anchor_tap
    ax.add_patch(
        Rectangle(
            (col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="magenta", linewidth=3
        )
    )
    if kh * kw <= _MAX_LABELLED_TAPS:
        size = 7 if max(kh, kw) <= 5 else 5
        for (i, j), value in np.ndenumerate(plane):
            shade = (value - vmin) / (vmax - vmin)
            if cmap == "viridis":
                colour = "black" if shade > 0.6 else "white"
            else:
                colour = "white" if abs(shade - 0.5) > 0.35 else "black"
            ax.text(
                j,
                i,
                _tap_text(value, peak),
                ha="center",
                va="center",
                fontsize=size,
                color=colour,
            )
    ax.set_xticks(range(kw))
    ax.set_yticks(range(kh))
    ax.tick_params(labelsize=7)
    if label:
        ax.set_title(label, fontsize=9)


def _tap_text(value: float, peak: float) -> str:
    """A tap with three significant digits of the panel's peak, short: ".249"."""
    decimals = max(0, 2 - math.floor(math.log10(peak)))
    text = f"{value:.{decimals}f}"
    if decimals and text.lstrip("-").startswith("0."):
        text = text.replace("0.", ".", 1)
    return "0" if text.strip("-.0") == "" else text


def _draw_losses(ax, losses: np.ndarray) -> None:
    if losses.size == 0:
        ax.text(
            0.5,
            0.5,
            "no optimiser steps",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
        return
    steps = np.arange(1, losses.size + 1)
    ax.plot(
        steps,
        losses,
        color="tab:blue",
        linewidth=1.2,
        marker="." if losses.size < 30 else None,
    )
    if (losses > 0).all():
        ax.set_yscale("log")
        ax.set_ylabel("loss (log scale)", fontsize=8)
    else:
        ax.set_ylabel("loss", fontsize=8)
    ax.set_xlabel("step", fontsize=8)
    ax.set_title(f"final {losses[-1]:.3g} after {losses.size} steps", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(True, which="both", alpha=0.3)


def _check_panels(panels) -> list[tuple[str, np.ndarray]]:
    """Validate (label, image) pairs; return (H, W, C) float images."""
    if isinstance(panels, (str, bytes)) or not isinstance(panels, Sequence):
        raise TypeError(
            "panels must be a list of (label, image) pairs, "
            f"got {type(panels).__name__}"
        )
    if len(panels) == 0:
        raise ValueError("panels is empty; give at least one (label, image) pair")
    items = []
    for k, panel in enumerate(panels):
        if not (isinstance(panel, (tuple, list)) and len(panel) == 2):
            raise TypeError(
                f"panel {k} must be a (label, image) pair, got {type(panel).__name__}"
            )
        label, image = panel
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape:
            raise ValueError(
                f"panel {k} ({label!r}): image must be (H, W), (H, W, 1), "
                f"(H, W, 3) or (H, W, 4), got shape {np.shape(panel[1])}"
            )
        if not np.issubdtype(image.dtype, np.floating):
            raise TypeError(
                f"panel {k} ({label!r}): image must be floats in [0, 1], got dtype "
                f"{image.dtype}; divide integer data by its type's maximum first"
            )
        image = np.nan_to_num(image.astype(np.float64), nan=0.0)
        items.append((str(label), np.clip(image, 0.0, 1.0)))
    return items


def _save(fig: Figure, path, overwrite: bool) -> None:
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
