"""Image quality: PSNR and SSIM of a test image against the true image.

Both take ``(H, W, C)`` float arrays, as in :attr:`deblur.imageio.Image.data`,
and an explicit `data_range`: the distance between the lowest and highest
value the samples can take. On data read by :func:`deblur.imageio.read_image`
(integers divided by their maximum) that is 1.0; never a range guessed from
the data, which would make scores depend on the image content.

Examples
--------
A constant error of 0.1 on a range of 1 is a mean squared error of 0.01,
``10 * log10(1 / 0.01) = 20`` dB:

>>> import numpy as np
>>> true = np.zeros((8, 8, 3))
>>> round(psnr(true, true + 0.1, data_range=1.0), 6)
20.0
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = ["SSIM_MIN_WINDOW", "SSIM_WINDOW", "psnr", "ssim", "ssim_window"]

#: Side of SSIM's square window (scikit-image's default, uniform weights).
SSIM_WINDOW = 7

#: Smallest window SSIM is computed with; smaller images score NaN.
SSIM_MIN_WINDOW = 3


def _prepare(
    image_true: np.ndarray, image_test: np.ndarray, data_range: float
) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and range; return both images as float64 ``(H, W, C)``."""
    true = np.asarray(image_true, dtype=np.float64)
    test = np.asarray(image_test, dtype=np.float64)
    if true.shape != test.shape:
        raise ValueError(
            f"image_true and image_test must have the same shape, got "
            f"{true.shape} and {test.shape}; crop or resize one to match"
        )
    if true.ndim == 2:
        true, test = true[..., None], test[..., None]
    if true.ndim != 3:
        raise ValueError(
            f"images must be (H, W, C) or (H, W), got shape {image_true.shape}"
        )
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(
            f"data_range must be a positive finite number, got {data_range!r}; "
            "use 1.0 for data scaled to [0, 1]"
        )
    return true, test


def psnr(image_true: np.ndarray, image_test: np.ndarray, data_range: float) -> float:
    """Compute the peak signal-to-noise ratio of `image_test`, in dB.

    Parameters
    ----------
    image_true : (H, W, C) or (H, W) ndarray
        The reference (sharp) image.
    image_test : (H, W, C) or (H, W) ndarray
        The image scored against it (blurred or restored), same shape.
    data_range : float
        Peak-to-peak range of the samples, 1.0 for data scaled to ``[0, 1]``.

    Returns
    -------
    psnr : float
        ``10 * log10(data_range**2 / MSE)`` over all pixels and channels.
        ``inf`` for identical images (kept as is: the report writers encode
        it); NaN if either image holds NaN.

    Raises
    ------
    ValueError
        If the shapes differ or `data_range` is not positive.
    """
    true, test = _prepare(image_true, image_test, data_range)
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(true, test, data_range=data_range))


def ssim_window(height: int, width: int) -> int | None:
    """Return the SSIM window side used for an ``height x width`` image.

    The default side is 7; smaller images use the largest odd side that fits,
    down to 3. Below that SSIM is not computed (None).

    Examples
    --------
    >>> ssim_window(512, 512), ssim_window(6, 100), ssim_window(2, 100)
    (7, 5, None)
    """
    side = min(SSIM_WINDOW, height, width)
    if side % 2 == 0:
        side -= 1
    return side if side >= SSIM_MIN_WINDOW else None


def ssim(image_true: np.ndarray, image_test: np.ndarray, data_range: float) -> float:
    """Compute the mean structural similarity of `image_test` to `image_true`.

    Parameters
    ----------
    image_true : (H, W, C) or (H, W) ndarray
        The reference (sharp) image.
    image_test : (H, W, C) or (H, W) ndarray
        The image scored against it, same shape.
    data_range : float
        Peak-to-peak range of the samples, 1.0 for data scaled to ``[0, 1]``.

    Returns
    -------
    ssim : float
        Mean SSIM over pixels and channels, 1.0 for identical images. NaN for
        images smaller than 3 pixels in height or width, or holding NaN.

    Raises
    ------
    ValueError
        If the shapes differ or `data_range` is not positive.

    Notes
    -----
    A wrapper of :func:`skimage.metrics.structural_similarity` with its
    defaults: a uniform ``7 x 7`` window, sample covariances, the constants
    ``K1 = 0.01`` and ``K2 = 0.03``; colour channels are scored separately
    and averaged. Wang et al.'s original uses an ``11 x 11`` Gaussian window
    (sigma 1.5), so values differ slightly from tools that follow it.

    Images smaller than the window use the largest odd window that fits
    (:func:`ssim_window`), so SSIM of a ``5 x 5`` image uses a ``5 x 5``
    window; compare such scores only between images of the same size.
    """
    true, test = _prepare(image_true, image_test, data_range)
    window = ssim_window(true.shape[0], true.shape[1])
    if window is None:
        return math.nan
    return float(
        structural_similarity(
            true, test, win_size=window, data_range=data_range, channel_axis=2
        )
    )
