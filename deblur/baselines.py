"""Regularised deconvolutions from scikit-image, for comparison with the inverse.

The exact inverse (:func:`deblur.inverse_causal_conv2d`) undoes a causal blur
with nothing added; it is the tool of choice when the anchor dominates the
kernel. The methods here trade exactness for robustness: they never divide by
a vanishing frequency of the kernel, so they also work for centred blurs, for
kernels whose inverse is unstable and for noisy images.

The two conventions differ, and mixing them shifts the result by half a
kernel. deblur's operator is a *cross-correlation* whose anchor tap (the one
that multiplies the pixel itself) sits in a corner of the kernel array, with
the image taken as zero outside (DESIGN.md section 2). scikit-image models the
blur as a *convolution* with a PSF centred in its array. :func:`psf_from_kernel`
converts the first into the second exactly: it flips the kernel and embeds it
in a zero array of odd size whose centre is the anchor tap.

Examples
--------
An impulse blurred by a causal kernel whose largest tap is the top-left one
peaks one pixel down and right; restored, it is back on its own pixel:

>>> import torch
>>> from deblur import causal_conv2d
>>> x = np.zeros((9, 9, 1)); x[4, 4, 0] = 1.0
>>> k = np.array([[0.5, 0.1], [0.1, 0.3]])
>>> y = causal_conv2d(torch.from_numpy(x).permute(2, 0, 1)[None],
...                   torch.from_numpy(k))[0].permute(1, 2, 0).numpy()
>>> [int(i) for i in np.unravel_index(y.argmax(), y.shape)]
[5, 5, 0]
>>> restored, used = deconvolve(y, k, "wiener", balance=1e-6)
>>> [int(i) for i in np.unravel_index(restored.argmax(), restored.shape)]
[4, 4, 0]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
from scipy import optimize
from skimage import restoration
from skimage.restoration import uft

from .ops.forms import ANCHORS

__all__ = [
    "BASELINE_ANCHORS",
    "BOUNDARIES",
    "METHODS",
    "default_balance",
    "deconvolve",
    "psf_from_kernel",
    "wiener_noise_gain",
]

METHODS = ("wiener", "unsupervised-wiener", "richardson-lucy")

#: the corners of a causal kernel, plus ``center`` for a centred blur
BASELINE_ANCHORS = (*ANCHORS, "center")

#: how the image is continued outside its frame (see :func:`deconvolve`)
BOUNDARIES = ("zero", "symmetric", "none")

#: the parameters each method accepts, with their defaults (None: derived)
_DEFAULTS: dict[str, dict[str, object]] = {
    "wiener": {"balance": None, "boundary": "zero"},
    "unsupervised-wiener": {"seed": 0, "boundary": "zero"},
    "richardson-lucy": {"num_iter": 30, "boundary": "zero"},
}

#: the noise of a 16-bit quantisation, the least a stored image carries
_SIGMA_FLOOR = 1.0 / (65535 * math.sqrt(12.0))

#: the default Wiener balance amplifies white noise at most this much
_MAX_NOISE_GAIN = 5.0

#: a float image above this is taken for unscaled integer data (0..255)
_MAX_VALUE = 2.0


def psf_from_kernel(kernel: np.ndarray, anchor: str = "bottom-right") -> np.ndarray:
    """Turn a deblur kernel into a centred convolution PSF for scikit-image.

    Parameters
    ----------
    kernel : (kh, kw) ndarray
        Correlation kernel in deblur's convention: the tap at the `anchor`
        multiplies the pixel itself.
    anchor : {"bottom-right", "bottom-left", "top-right", "top-left", "center"}
        Where the anchor tap sits in `kernel`. ``"center"`` is the tap
        ``(kh // 2, kw // 2)``, the middle one for odd sizes and the one just
        below and right of the middle for even sizes (as in
        ``scipy.ndimage.correlate``).

    Returns
    -------
    psf : (2 * rh + 1, 2 * rw + 1) ndarray
        The kernel flipped in both axes (correlation to convolution) and placed
        so that the anchor tap lands on the centre ``(rh, rw)``; ``rh`` is the
        larger of the anchor's distances to the top and bottom rows, ``rw``
        the same for the columns. The other taps are zero.

    Raises
    ------
    ValueError
        If `anchor` is not one of :data:`BASELINE_ANCHORS` or `kernel` is not
        two-dimensional.

    Examples
    --------
    A bottom-right anchor goes to the centre, its neighbours above and to the
    left go below and to the right of it:

    >>> psf_from_kernel(np.array([[1.0, 2.0], [3.0, 4.0]]))
    array([[0., 0., 0.],
           [0., 4., 3.],
           [0., 2., 1.]])
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2:
        raise ValueError(
            f"psf_from_kernel takes one (kh, kw) kernel, got shape {kernel.shape}; "
            "call it once per channel"
        )
    kh, kw = kernel.shape
    ra, ca = _anchor_index((kh, kw), anchor)

    # After the flip the anchor sits at (kh-1-ra, kw-1-ca); shift it to the
    # centre of an array that reaches as far as the kernel on every side.
    rh, rw = max(ra, kh - 1 - ra), max(ca, kw - 1 - ca)
    top, left = rh - (kh - 1 - ra), rw - (kw - 1 - ca)
    psf = np.zeros((2 * rh + 1, 2 * rw + 1))
    psf[top : top + kh, left : left + kw] = kernel[::-1, ::-1]
    return psf


def wiener_noise_gain(
    kernel: np.ndarray,
    balance: float,
    shape: tuple[int, int],
    anchor: str = "bottom-right",
) -> float:
    """Return how much the Wiener filter amplifies white noise.

    Parameters
    ----------
    kernel : (kh, kw) ndarray
        Blur kernel (PSF) in deblur's convention.
    balance : float
        The Wiener balance, >= 0.
    shape : (H, W) tuple
        The size of the (padded) image the filter runs on.
    anchor : str
        As for :func:`psf_from_kernel`.

    Returns
    -------
    gain : float
        ``sqrt(mean(|W|**2))`` over the frequencies, with
        ``W = conj(H) / (|H|**2 + balance * |L|**2)``: white noise of level
        ``s`` comes out at about ``gain * s``. The counterpart of the exact
        inverse's gain ``||K^-1 delta||_2``, which it approaches as `balance`
        goes to 0 for a stable causal kernel.
    """
    h2, l2 = _power_spectra(psf_from_kernel(kernel, anchor), shape)
    return _gain(h2, l2, balance)


def default_balance(
    image: np.ndarray,
    kernel: np.ndarray,
    anchor: str = "bottom-right",
    shape: tuple[int, int] | None = None,
) -> tuple[float, float]:
    """Choose the Wiener `balance` from the image's noise level and the kernel.

    Parameters
    ----------
    image : (H, W, C) ndarray
        The blurred image, float in [0, 1].
    kernel : (kh, kw) or (C, kh, kw) ndarray
        Blur kernel (PSF) in deblur's convention.
    anchor : str
        As for :func:`psf_from_kernel`.
    shape : (H, W) tuple, optional
        The size the filter runs on (the padded image); the image's own by
        default.

    Returns
    -------
    balance : float
        The larger of ``sigma**2 / max(var, sigma**2)``, the noise-to-signal
        power ratio, and the smallest balance whose filter amplifies white
        noise at most 5 times (:func:`wiener_noise_gain`).
    sigma : float
        The noise level used: ``skimage.restoration.estimate_sigma`` averaged
        over the channels, raised to at least the noise of a 16-bit
        quantisation, ``1 / (65535 * sqrt(12))``, so that a noise-free image
        still gets a positive balance.

    Notes
    -----
    ``var`` is the mean over the channels of each channel's variance. The
    noise-to-signal ratio alone suits kernels that are easy to invert: on
    ``skimage.data.camera()`` blurred by a 5x5 causal Gaussian and stored as
    8-bit, with and without added noise (std 0.01, 0.03), it lands within a
    factor of three of the best balance of a sweep. For an ill-conditioned
    kernel (a centred Gaussian, whose transfer function nearly vanishes) it
    is far too small: errors the noise estimate does not see, from the
    boundary and the quantisation, blow up. The cap on the noise gain keeps
    the default useful there (8-bit centred Gaussian, sigma 1.2: 24.7 dB
    with the cap, 14.5 dB without; the best balance gives 28.4 dB).
    ``estimate_sigma`` mistakes fine texture for noise, so on a clean 16-bit
    image the balance comes out too large: pass `balance` yourself there.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = image[:, :, None]
    # estimate_sigma looks at the non-zero wavelet details only: an image
    # without any (a constant one) gives NaN and a warning, taken as no noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sigma = float(
            restoration.estimate_sigma(image, average_sigmas=True, channel_axis=-1)
        )
    sigma = sigma if math.isfinite(sigma) and sigma > _SIGMA_FLOOR else _SIGMA_FLOOR
    var = float(np.mean(np.var(image, axis=(0, 1))))
    balance = sigma**2 / max(var, sigma**2)

    shape = image.shape[:2] if shape is None else shape
    kernels = np.asarray(kernel, dtype=np.float64).reshape(-1, *np.shape(kernel)[-2:])
    for k in kernels:
        balance = max(balance, _balance_for_gain(k, anchor, shape, _MAX_NOISE_GAIN))
    return balance, sigma


def _power_spectra(psf: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """|H|**2 of `psf` and |L|**2 of scikit-image's Laplacian, all frequencies."""
    h = uft.ir2tf(psf, shape, is_real=False)
    lap, _ = uft.laplacian(2, shape, is_real=False)
    return np.abs(h) ** 2, np.abs(lap) ** 2


def _gain(h2: np.ndarray, l2: np.ndarray, balance: float) -> float:
    """sqrt(mean |W|**2) of the Wiener filter; a zero of H and L counts 0."""
    denom = (h2 + balance * l2) ** 2
    w2 = np.divide(h2, denom, out=np.zeros_like(h2), where=denom > 0)
    return float(np.sqrt(w2.mean()))


def _balance_for_gain(kernel, anchor, shape, max_gain: float) -> float:
    """The smallest balance whose Wiener filter has a noise gain <= max_gain."""
    h2, l2 = _power_spectra(psf_from_kernel(kernel, anchor), shape)

    def excess(log_balance: float) -> float:
        return math.log(_gain(h2, l2, math.exp(log_balance)) / max_gain)

    low, high = math.log(1e-12), math.log(1e2)
    if excess(low) <= 0:
        return 0.0
    return math.exp(optimize.brentq(excess, low, high, xtol=1e-2))


def deconvolve(
    image: np.ndarray,
    kernel: np.ndarray,
    method: str,
    anchor: str = "bottom-right",
    **params,
) -> tuple[np.ndarray, dict]:
    """Restore a blurred image with a regularised scikit-image method.

    Parameters
    ----------
    image : (H, W, C) or (H, W) ndarray
        The blurred image, float in [0, 1] (divide integer data by its type's
        maximum first). Any size, odd and non-square included.
    kernel : (kh, kw) or (C, kh, kw) ndarray
        Blur kernel (PSF) in deblur's convention, one for every channel or
        one per channel.
    method : {"wiener", "unsupervised-wiener", "richardson-lucy"}
        See Notes for when each one helps.
    anchor : {"bottom-right", "bottom-left", "top-right", "top-left", "center"}
        The tap of `kernel` that multiplies the pixel itself. A corner for a
        causal kernel (the operator of :func:`deblur.causal_conv2d`);
        ``"center"`` for a centred blur, tap ``(kh // 2, kw // 2)``.
    **params
        Per method, with their defaults:

        - ``wiener``: ``balance`` (None: :func:`default_balance`),
          ``boundary="zero"``.
        - ``unsupervised-wiener``: ``seed=0`` (the sampler's random
          generator, for reproducible results), ``boundary="zero"``.
        - ``richardson-lucy``: ``num_iter=30``, ``boundary="zero"``.

        ``boundary`` says how the image continues outside its frame:
        ``"zero"`` as deblur's operator assumes (black outside, the blur
        spilling out on the far sides), ``"symmetric"`` mirrored, for photos
        whose scene goes on past the frame, ``"none"`` no padding at all
        (scikit-image's own handling: wrap-around for the Wiener filters).

    Returns
    -------
    restored : ndarray
        Float64, the shape of `image`; not clipped (the caller clips and
        counts out-of-range values).
    used_params : dict
        ``method``, ``anchor`` and every parameter with the value used,
        defaults included: for Wiener ``balance`` (with the ``noise_sigma``
        it came from when derived) and the filter's ``noise_gain``
        (:func:`wiener_noise_gain`); for the unsupervised Wiener
        ``num_iter``, the sampler's iterations (the most over the channels);
        for Richardson-Lucy ``kernel_sum``.

    Raises
    ------
    ValueError
        For an unknown method, anchor or boundary, a kernel whose shape does
        not fit the image, non-finite values, an image that looks unscaled
        (values above 2), or a kernel Richardson-Lucy cannot use.
    TypeError
        For an integer image or a parameter the method does not take.
    NotImplementedError
        For a channel-mixing ``(C, C, kh, kw)`` kernel.

    Notes
    -----
    Prefer the exact inverse for a causal kernel with a dominant anchor and
    little noise; prefer these when the kernel is centred (its exact inverse
    does not exist or explodes), its noise gain is large, or the image is
    noisy.

    - ``wiener``: one linear filter in the Fourier domain,
      ``conj(H) / (|H|**2 + balance * |L|**2)`` with ``L`` a Laplacian. Fast
      and deterministic; `balance` trades noise against sharpness.
    - ``unsupervised-wiener``: the same model, with the balance and the noise
      level estimated by a Gibbs sampler. No parameter to tune, several times
      slower, random (hence `seed`).
    - ``richardson-lucy``: the multiplicative iteration for Poisson noise;
      keeps the result non-negative, needs a non-negative kernel with a
      positive sum, converges slowly. Negative image values are set to zero
      first.

    The Wiener filters work in the Fourier domain and so assume a periodic
    image: the blur of the bottom rows wraps onto the top ones, and the
    restored image rings near the edges. With ``boundary="zero"`` the image
    is padded with zeros on the sides the blur spills over, by twice the
    kernel's reach there, which leaves the near sides exactly as deblur's
    operator has them (zero) and lets the wrap-around land in the padding.
    Richardson-Lucy already takes the image as zero outside, but without a
    normalisation at the frame it darkens the last rows and columns;
    ``boundary="zero"`` pads its spill sides by edge replication instead.
    On ``skimage.data.camera()`` blurred by a 5x5 causal Gaussian (sigma
    1.2) and stored as 8-bit (26.9 dB), PSNR with ``"zero"``, ``"symmetric"``
    and ``"none"``: Wiener 44.5, 34.9 and 29.0 dB; unsupervised Wiener 41.8,
    34.6 and 29.1 dB; Richardson-Lucy 40.3, 33.9 and 28.0 dB. For a photo
    blurred by real optics (no black frame), ``"symmetric"`` is the better
    guess: for a 5x5 centred Gaussian blur of ``camera()`` with mirrored
    edges (28.8 dB), Wiener gives 31.9 dB with it against 21.9 dB with
    ``"zero"``.
    """
    image, kernels, anchor = _check_inputs(image, kernel, method, anchor)
    used = _resolve_params(method, params)
    squeeze = image.ndim == 2
    if squeeze:
        image = image[:, :, None]
    C = image.shape[2]
    if kernels.shape[0] == 1:
        kernels = np.repeat(kernels, C, axis=0)

    if method == "wiener":
        shape = _padded_shape(image.shape[:2], kernels.shape[1:], anchor, used)
        if used["balance"] is None:
            used["balance"], used["noise_sigma"] = default_balance(
                image, kernels, anchor, shape
            )
        used["noise_gain"] = max(
            wiener_noise_gain(k, used["balance"], shape, anchor) for k in kernels
        )
        planes = [_wiener(image[..., c], kernels[c], anchor, used) for c in range(C)]
    elif method == "unsupervised-wiener":
        results = [
            _unsupervised(image[..., c], kernels[c], anchor, used) for c in range(C)
        ]
        planes = [plane for plane, _ in results]
        used["num_iter"] = max(n for _, n in results)
    else:
        used["kernel_sum"] = _check_rl_kernels(kernels)
        image = np.maximum(image, 0.0)
        planes = [
            _richardson_lucy(image[..., c], kernels[c], anchor, used) for c in range(C)
        ]

    restored = np.stack(planes, axis=-1)
    if squeeze:
        restored = restored[:, :, 0]
    return restored, {"method": method, "anchor": anchor, **used}


def _anchor_index(kernel_size: tuple[int, int], anchor: str) -> tuple[int, int]:
    """Row and column of the anchor tap in a ``kh x kw`` kernel."""
    kh, kw = kernel_size
    if anchor == "center":
        return kh // 2, kw // 2
    if anchor not in ANCHORS:
        raise ValueError(
            f"anchor must be one of {', '.join(BASELINE_ANCHORS)}, got {anchor!r}"
        )
    row = kh - 1 if anchor.startswith("bottom") else 0
    col = kw - 1 if anchor.endswith("right") else 0
    return row, col


def _spill(kernel_size: tuple[int, int], anchor: str) -> tuple[int, int, int, int]:
    """How far the blur of a pixel reaches: (up, down, left, right).

    A pixel ``x[m, n]`` reaches the outputs ``y[m - (kh-1-ra) .. m + ra]``
    (rows) for an anchor at ``(ra, ca)``.
    """
    kh, kw = kernel_size
    ra, ca = _anchor_index(kernel_size, anchor)
    return kh - 1 - ra, ra, kw - 1 - ca, ca


def _pad_widths(
    kernel_size: tuple[int, int], anchor: str, boundary: str
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding per side for `boundary`: twice the reach of the blur there."""
    if boundary == "none":
        return (0, 0), (0, 0)
    if boundary == "symmetric":
        reach = 2 * max(kernel_size)
        return (reach, reach), (reach, reach)
    up, down, left, right = _spill(kernel_size, anchor)
    return (2 * up, 2 * down), (2 * left, 2 * right)


def _padded_shape(image_size, kernel_size, anchor: str, used) -> tuple[int, int]:
    """The size of the image once padded for ``used["boundary"]``."""
    (top, bottom), (left, right) = _pad_widths(kernel_size, anchor, used["boundary"])
    H, W = image_size
    return H + top + bottom, W + left + right


def _padded(
    plane: np.ndarray, kernel: np.ndarray, anchor: str, boundary: str, mode: str
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Pad `plane` for `boundary`; return it and the slices that crop it back."""
    widths = _pad_widths(kernel.shape, anchor, boundary)
    if boundary == "symmetric":
        mode = "symmetric"
    padded = np.pad(plane, widths, mode=mode)
    (top, _), (left, _) = widths
    H, W = plane.shape
    return padded, (slice(top, top + H), slice(left, left + W))


def _wiener(plane, kernel, anchor, used) -> np.ndarray:
    psf = psf_from_kernel(kernel, anchor)
    padded, crop = _padded(plane, kernel, anchor, used["boundary"], "constant")
    out = restoration.wiener(padded, psf, used["balance"], clip=False)
    return out[crop]


def _unsupervised(plane, kernel, anchor, used) -> tuple[np.ndarray, int]:
    psf = psf_from_kernel(kernel, anchor)
    padded, crop = _padded(plane, kernel, anchor, used["boundary"], "constant")
    out, chains = restoration.unsupervised_wiener(
        padded, psf, clip=False, rng=np.random.default_rng(used["seed"])
    )
    return out[crop], len(chains["noise"])


def _richardson_lucy(plane, kernel, anchor, used) -> np.ndarray:
    # y = K x = (K / s)(s x): iterate with the unit-sum kernel, then undo s.
    total = float(kernel.sum())
    psf = psf_from_kernel(kernel / total, anchor)
    padded, crop = _padded(plane, kernel, anchor, used["boundary"], "edge")
    out = restoration.richardson_lucy(
        padded, psf, num_iter=used["num_iter"], clip=False
    )
    return out[crop] / total


def _check_rl_kernels(kernels: np.ndarray) -> float | list[float]:
    """Refuse kernels Richardson-Lucy cannot use; return the sum(s)."""
    if (kernels < 0).any():
        raise ValueError(
            f"richardson-lucy needs a non-negative kernel, got a smallest tap of "
            f"{kernels.min():.3g}; use method 'wiener' for kernels with negative taps"
        )
    sums = kernels.sum(axis=(1, 2))
    if (sums <= 0).any():
        raise ValueError(
            "richardson-lucy needs a kernel with a positive sum, got an all-zero "
            "kernel; check the kernel file"
        )
    if np.allclose(sums, sums[0]):
        return float(sums[0])
    return [float(s) for s in sums]


def _resolve_params(method: str, params: Mapping[str, object]) -> dict:
    """Merge `params` into the method's defaults, refusing unknown names."""
    defaults = _DEFAULTS[method]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise TypeError(
            f"method {method!r} got unexpected parameter(s) {', '.join(unknown)}; "
            f"it takes {', '.join(defaults)}"
        )
    used = {**defaults, **params}
    if used["boundary"] not in BOUNDARIES:
        raise ValueError(
            f"boundary must be one of {', '.join(BOUNDARIES)}, got {used['boundary']!r}"
        )
    if method == "wiener" and used["balance"] is not None:
        balance = float(used["balance"])
        if not (balance >= 0 and math.isfinite(balance)):
            raise ValueError(
                f"balance must be a finite number >= 0, got {used['balance']!r}; "
                "leave it out to derive it from the image's noise"
            )
        used["balance"] = balance
    if method == "richardson-lucy":
        num_iter = used["num_iter"]
        if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter < 1:
            raise ValueError(f"num_iter must be an integer >= 1, got {num_iter!r}")
    return used


def _check_inputs(
    image, kernel, method: str, anchor: str
) -> tuple[np.ndarray, np.ndarray, str]:
    """Validate and convert; return the float64 image, (Ck, kh, kw) kernels."""
    if method not in METHODS:
        raise ValueError(
            f"method must be one of {', '.join(METHODS)}, got {method!r}; "
            "the exact inverse is deblur.inverse_causal_conv2d"
        )
    if anchor not in BASELINE_ANCHORS:
        raise ValueError(
            f"anchor must be one of {', '.join(BASELINE_ANCHORS)}, got {anchor!r}"
        )

    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(
            f"image must be a float array in [0, 1], got dtype {image.dtype}; "
            "divide integer data by its type's maximum (255, 65535) first"
        )
    if image.ndim not in (2, 3) or min(image.shape[:2]) == 0:
        raise ValueError(
            f"image must be (H, W, C) or (H, W) and not empty, got shape {image.shape}"
        )
    image = image.astype(np.float64)
    if not np.isfinite(image).all():
        raise ValueError("image holds NaN or infinite values; fix the input first")
    if image.max() > _MAX_VALUE:
        raise ValueError(
            f"image values reach {image.max():.6g}, expected floats in [0, 1]; "
            "divide 8-bit data by 255 and 16-bit data by 65535"
        )

    kernels = np.asarray(kernel, dtype=np.float64)
    C = 1 if image.ndim == 2 else image.shape[2]
    if kernels.ndim == 4:
        raise NotImplementedError(
            f"a channel-mixing kernel {kernels.shape} is not supported by the "
            "scikit-image baselines; they take (kh, kw) or (C, kh, kw) kernels"
        )
    if kernels.ndim == 2:
        kernels = kernels[None]
    if kernels.ndim != 3 or kernels.size == 0:
        raise ValueError(
            f"kernel must be (kh, kw) or (C, kh, kw), got shape {np.shape(kernel)}"
        )
    if kernels.shape[0] not in (1, C):
        raise ValueError(
            f"kernel has {kernels.shape[0]} channels (shape {kernels.shape}) but "
            f"the image has {C}; give one kernel per channel or a single (kh, kw) one"
        )
    if not np.isfinite(kernels).all():
        raise ValueError("kernel holds NaN or infinite values; check the kernel file")
    return image, kernels, anchor
