"""Time the exact inverse and its backward pass against the yardsticks.

Every yardstick of DESIGN.md section 7 runs in one process on the same inputs:
a ``H x W x C`` float32 image and a causal ``k x k`` kernel shared by the
channels.  Each time is the median of several runs after a warm-up run; the
slow yardsticks (scipy, the dense solve) get fewer runs, bounded by a time
budget.  The results are plain records that :func:`ratios` turns into the
ratios that the project sets speed targets for.

Examples
--------
>>> records = run_bench(size=(32, 32), channels=1, kernel_sizes=(3,),
...                     methods=("deblur.inverse", "clone"), repeats=2)
>>> sorted(r["method"] for r in records)
['clone', 'deblur.inverse']
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .ops import causal_conv2d, inverse_causal_conv2d

__all__ = [
    "METHODS",
    "TARGETS",
    "Target",
    "environment",
    "ratios",
    "run_bench",
]

#: what is timed, in the order of the tables
METHODS = (
    "deblur.inverse",
    "deblur.backward",
    "torch.conv2d",
    "scipy.spsolve_triangular",
    "torch.wavefront",
    "clone",
    "torch.linalg.solve",
    "deblur.substitution",
)

#: the two methods of the small dense case
DENSE_METHODS = ("torch.linalg.solve", "deblur.substitution")


@dataclass(frozen=True)
class Target:
    """A ratio of two timings of one case, and its target bound."""

    name: str
    numerator: str
    denominator: str
    bound: float | None  # None: reported, no target
    at_most: bool = True  # the ratio must stay <= bound (else >= bound)
    kernel_sizes: tuple[int, ...] | None = None  # None: every kernel size

    def describe(self) -> str:
        if self.bound is None:
            return ""
        return f"{'<=' if self.at_most else '>='} {self.bound:g}"


TARGETS = (
    Target("inverse / conv2d", "deblur.inverse", "torch.conv2d", 0.5),
    Target(
        "scipy / inverse", "scipy.spsolve_triangular", "deblur.inverse", 30.0, False
    ),
    Target("backward / inverse", "deblur.backward", "deblur.inverse", 2.0),
    Target("inverse / clone", "deblur.inverse", "clone", 10.0, kernel_sizes=(3,)),
    Target("wavefront / inverse", "torch.wavefront", "deblur.inverse", None),
    Target("dense / substitution", "torch.linalg.solve", "deblur.substitution", None),
)


def environment() -> dict:
    """Describe where the timings were taken (versions, threads, CPU)."""
    import numba

    return {
        "torch": torch.__version__,
        "numba": numba.__version__,
        "threads_torch": torch.get_num_threads(),
        "threads_numba": numba.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


# -- inputs -----------------------------------------------------------------------


def _kernel(k: int, generator: torch.Generator) -> torch.Tensor:
    """A stable causal ``k x k`` kernel: anchor 1, other taps summing below 1/2."""
    kernel = torch.rand(k, k, generator=generator) * (1.0 / max(1, k * k - 1))
    kernel[-1, -1] = 1.0
    return kernel


def _image(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator)


def _sparse_system(kernel: np.ndarray, height: int, width: int):
    """The operator on one plane as a lower-triangular CSR matrix (scipy)."""
    from scipy import sparse

    kh, kw = kernel.shape
    i, j = np.mgrid[0:height, 0:width]
    rows, cols, vals = [], [], []
    for a in range(kh):
        for b in range(kw):
            u, v = i - (kh - 1) + a, j - (kw - 1) + b
            inside = (u >= 0) & (v >= 0)
            rows.append((i * width + j)[inside])
            cols.append((u * width + v)[inside])
            vals.append(np.full(int(inside.sum()), kernel[a, b], dtype=kernel.dtype))
    n = height * width
    coo = sparse.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n, n),
    )
    return coo.tocsr()


# -- timing -----------------------------------------------------------------------


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    def measure(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    return measure


def _samples(
    fn: Callable[[], object],
    measure: Callable[[Callable[[], object]], float],
    repeats: int,
    budget: float,
    warmup: bool = True,
) -> list[float]:
    """Up to ``repeats`` timings of ``fn``, fewer when they would pass ``budget``.

    The warm-up run is dropped, unless it alone took longer than ``budget``
    (then it is the only sample) or ``warmup`` is False.
    """
    first = measure(fn)
    if first > budget or not warmup:
        samples = [first]
    else:
        samples = []
    runs = max(1, min(repeats, math.floor(budget / max(first, 1e-9))))
    while len(samples) < runs:
        samples.append(measure(fn))
    return samples


def _wavefront_missing() -> str | None:
    """Say why the torch-ops wavefront cannot be timed, or None if it can."""
    try:
        from .ops import wavefront
    except ImportError as exc:  # pragma: no cover - the module ships with deblur
        return f"deblur.ops.wavefront does not import ({exc})"
    doc = (wavefront.__doc__ or "").lstrip().lower()
    if doc.startswith("placeholder"):
        return "deblur.ops.wavefront is still the slow placeholder"
    return None


def run_bench(
    size: tuple[int, int] = (1024, 1024),
    channels: int = 3,
    kernel_sizes: Sequence[int] = (3, 5, 7),
    *,
    repeats: int = 7,
    methods: Iterable[str] | None = None,
    dense_size: int = 96,
    budget: float = 3.0,
    slow_budget: float = 8.0,
    device: str | torch.device = "cpu",
    seed: int = 0,
    on_record: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Time the inverse, its backward and the yardsticks; return one record each.

    Parameters
    ----------
    size : (int, int), default (1024, 1024)
        Image height and width.
    channels : int, default 3
        Image channels ``C``; the kernel is shared by them.
    kernel_sizes : sequence of int, default (3, 5, 7)
        One case per ``k`` (a ``k x k`` kernel).
    repeats : int, default 7
        Runs per timing after the warm-up run; the median is reported.
    methods : iterable of str, optional
        A subset of :data:`METHODS` (default all).
    dense_size : int, default 96
        Side of the one-channel image of the dense case (``torch.linalg.solve``
        on the ``(n^2, n^2)`` matrix against substitution); 0 skips it.
    budget, slow_budget : float
        Seconds a timing may take before it stops repeating; ``slow_budget``
        is also the estimated time above which the torch wavefront is skipped.
    device : str or torch.device, default "cpu"
        Where the torch methods run; scipy always runs on the CPU.
    seed : int
        Seed of the random image and kernel.
    on_record : callable, optional
        Called with each record as soon as it is measured (for progress).

    Returns
    -------
    records : list of dict
        ``{"case", "method", "seconds", "min_seconds", "repeats", "note"}``:
        ``case`` reads ``"1024x1024x3 k=3"``, ``seconds`` is the median and
        ``min_seconds`` the fastest of ``repeats`` timings (the minimum is
        the steadier one on a machine that other processes share); both are
        None for a method that was skipped, and ``note`` says why.

    Raises
    ------
    ValueError
        If a method is unknown or a size is not positive.

    Notes
    -----
    ``deblur.backward`` times the backward call alone (both gradients, with
    respect to the image and the kernel), on a graph built by one forward
    pass: ``torch.autograd.grad(restored, (blurred, kernel), upstream,
    retain_graph=True)``.  ``torch.conv2d`` is the causal blur itself
    (:func:`deblur.causal_conv2d`: padding on the top and left, then
    ``F.conv2d`` with the same kernel).  ``scipy.spsolve_triangular`` solves
    one plane's lower-triangular CSR matrix for all ``C`` channels as columns
    of one right-hand side; building the matrix is not timed, and it gets no
    warm-up run.  The dense case is float32 as well.
    """
    height, width = (int(s) for s in size)
    if height < 1 or width < 1 or channels < 1 or any(k < 1 for k in kernel_sizes):
        raise ValueError(
            f"sizes must be positive, got size={tuple(size)}, channels={channels}, "
            f"kernel_sizes={tuple(kernel_sizes)}"
        )
    chosen = tuple(METHODS if methods is None else methods)
    unknown = sorted(set(chosen) - set(METHODS))
    if unknown:
        raise ValueError(
            f"unknown benchmark methods {unknown}; choose from {', '.join(METHODS)}"
        )
    runner = _Runner(
        _timer(torch.device(device)), repeats, budget, slow_budget, on_record
    )
    generator = torch.Generator().manual_seed(seed)
    for k in kernel_sizes:
        kernel = _kernel(k, generator).to(device)
        blurred = _image((1, channels, height, width), generator).to(device)
        runner.image_case(f"{height}x{width}x{channels} k={k}", blurred, kernel, chosen)

    dense = [m for m in DENSE_METHODS if m in chosen]
    if dense and dense_size > 0:
        kernel = _kernel(3, generator).to(device)
        blurred = _image((1, 1, dense_size, dense_size), generator).to(device)
        runner.dense_case(f"{dense_size}x{dense_size}x1 k=3", blurred, kernel, dense)
    return runner.records


@dataclass
class _Runner:
    """Times the methods of one case and collects the records."""

    measure: Callable[[Callable[[], object]], float]
    repeats: int
    budget: float
    slow_budget: float
    on_record: Callable[[dict], None] | None
    records: list[dict] = field(default_factory=list)

    def add(self, case, method, samples, note=""):
        record = {
            "case": case,
            "method": method,
            "seconds": statistics.median(samples) if samples else None,
            "min_seconds": min(samples) if samples else None,
            "repeats": len(samples),
            "note": note,
        }
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)

    def time(self, case, method, fn, note="", slow=False, warmup=True):
        repeats = min(self.repeats, 3) if slow else self.repeats
        budget = self.slow_budget if slow else self.budget
        self.add(
            case, method, _samples(fn, self.measure, repeats, budget, warmup), note
        )

    def image_case(self, case, blurred, kernel, chosen):
        fast = {}  # method: (function, note), timed in rounds
        if "deblur.inverse" in chosen:
            fast["deblur.inverse"] = (
                lambda: inverse_causal_conv2d(blurred, kernel),
                "",
            )
        if "deblur.backward" in chosen:
            leaf = blurred.clone().requires_grad_()
            taps = kernel.clone().requires_grad_()
            restored = inverse_causal_conv2d(leaf, taps)
            upstream = torch.rand_like(restored)
            fast["deblur.backward"] = (
                lambda: torch.autograd.grad(
                    restored, (leaf, taps), upstream, retain_graph=True
                ),
                "backward call only, both gradients",
            )
        if "torch.conv2d" in chosen:
            fast["torch.conv2d"] = (
                lambda: causal_conv2d(blurred, kernel),
                "the causal blur: padding + F.conv2d",
            )
        if "clone" in chosen:
            fast["clone"] = (blurred.clone, "")
        samples = self._rounds({m: fn for m, (fn, _) in fast.items()})

        for method in METHODS:
            if method in fast:
                self.add(case, method, samples[method], fast[method][1])
            elif method == "scipy.spsolve_triangular" and method in chosen:
                self._scipy(case, blurred, kernel)
            elif method == "torch.wavefront" and method in chosen:
                self._wavefront(case, blurred, kernel)

    def _rounds(self, functions):
        """Time each function in turn, one call per round; return the samples.

        Interleaving the methods spreads a burst of load from other
        processes over all of them, which keeps their ratios meaningful.
        """
        samples = {method: [] for method in functions}
        for fn in functions.values():  # warm-up
            fn()
        started = time.perf_counter()
        runs = 0
        while runs < self.repeats:
            for method, fn in functions.items():
                samples[method].append(self.measure(fn))
            runs += 1
            if time.perf_counter() - started > self.budget * len(functions):
                break
        return samples

    def _scipy(self, case, blurred, kernel):
        from scipy.sparse.linalg import spsolve_triangular

        _, C, H, W = blurred.shape
        matrix = _sparse_system(kernel.cpu().numpy(), H, W)
        rhs = blurred.cpu().numpy().reshape(C, -1).T.copy()
        solution = {}

        def solve():
            solution["x"] = spsolve_triangular(matrix, rhs, lower=True)

        samples = _samples(
            solve, _time_once, min(self.repeats, 3), self.slow_budget, warmup=False
        )
        ours = inverse_causal_conv2d(blurred, kernel).cpu().numpy().reshape(C, -1).T
        error = float(np.abs(solution["x"] - ours).max())
        note = f"CSR, build not timed; max |difference| from deblur {error:.1e}"
        self.add(case, "scipy.spsolve_triangular", samples, note)

    def _wavefront(self, case, blurred, kernel):
        missing = _wavefront_missing()
        if missing:
            self.add(case, "torch.wavefront", [], f"skipped: {missing}")
            return
        from .ops import wavefront

        _, C, H, W = blurred.shape
        planes = blurred.reshape(C, H, W)
        canon = kernel.unsqueeze(0).contiguous()

        # a probe on a corner of the image, to skip a run that would take minutes
        ph, pw = min(H, 128), min(W, 128)
        probe = planes[:, :ph, :pw].contiguous()
        wavefront.solve_depthwise(probe, canon)
        probe_seconds = self.measure(lambda: wavefront.solve_depthwise(probe, canon))
        estimate = probe_seconds * (H * W) / (ph * pw)
        if estimate > 2 * self.slow_budget:
            note = (
                f"skipped: about {estimate:.0f} s per run, from {probe_seconds:.2f} s "
                f"on {ph}x{pw}"
            )
            self.add(case, "torch.wavefront", [], note)
            return
        self.time(
            case,
            "torch.wavefront",
            lambda: wavefront.solve_depthwise(planes, canon),
            "deblur.ops.wavefront",
            slow=True,
        )

    def dense_case(self, case, blurred, kernel, methods):
        from .ops.dense import dense_matrix

        n = blurred.shape[-1]
        if "torch.linalg.solve" in methods:
            matrix = dense_matrix(kernel.cpu(), 1, n, n).float().to(blurred.device)
            rhs = blurred.reshape(-1, 1)
            self.time(
                case,
                "torch.linalg.solve",
                lambda: torch.linalg.solve(matrix, rhs),
                f"dense {n * n}x{n * n} float32, matrix build not timed",
                slow=True,
                warmup=False,
            )
            del matrix
        if "deblur.substitution" in methods:
            self.time(
                case,
                "deblur.substitution",
                lambda: inverse_causal_conv2d(blurred, kernel),
                "deblur.inverse on the same image",
            )


def _time_once(fn: Callable[[], object]) -> float:
    """Seconds that one call of ``fn`` takes (CPU code, nothing to synchronise)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ratios(
    records: Iterable[dict],
    targets: Sequence[Target] = TARGETS,
    statistic: str = "seconds",
) -> list[dict]:
    """Turn timing records into the ratios of :data:`TARGETS`, one per case.

    Parameters
    ----------
    records : iterable of dict
        As :func:`run_bench` returns them.
    targets : sequence of Target
        The ratios to compute.
    statistic : {"seconds", "min_seconds"}
        Which timing of each record to divide: the median or the minimum.

    Returns
    -------
    rows : list of dict
        ``{"case", "ratio", "value", "target", "met"}``; ``met`` is None when
        the ratio has no target, and a ratio whose timings are missing is
        left out.
    """
    seconds: dict[tuple[str, str], float] = {}
    cases: list[str] = []
    for r in records:
        if r["case"] not in cases:
            cases.append(r["case"])
        if r.get(statistic) is not None:
            seconds[r["case"], r["method"]] = r[statistic]

    rows = []
    for case in cases:
        k = int(case.rsplit("k=", 1)[1])
        for t in targets:
            top = seconds.get((case, t.numerator))
            bottom = seconds.get((case, t.denominator))
            if top is None or bottom is None or bottom <= 0:
                continue
            value = top / bottom
            met = None
            if t.bound is not None and (t.kernel_sizes is None or k in t.kernel_sizes):
                met = value <= t.bound if t.at_most else value >= t.bound
            rows.append(
                {
                    "case": case,
                    "ratio": t.name,
                    "value": value,
                    "target": t.describe() if met is not None else "",
                    "met": met,
                }
            )
    return rows
