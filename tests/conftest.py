"""Shared fixtures: tiny real image files and kernels written to tmp_path."""

import os
from pathlib import Path

import torch

# Triton runs its kernels on the CPU only under its interpreter, which must be
# switched on before triton is first imported (by tests or doctests).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest
from PIL import Image

from deblur.kernel import make_kernel, save_kernel

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"


def _photo(h: int, w: int, channels: int, seed: int = 0) -> np.ndarray:
    """A smooth, textured uint8 test picture (not noise, so PSNR means something)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(seed)
    planes = []
    for c in range(channels):
        f = rng.uniform(2, 9, size=2)
        planes.append(
            0.5 + 0.4 * np.sin(f[0] * 6.28 * xx + c) * np.cos(f[1] * 6.28 * yy)
        )
    img = np.stack(planes, axis=-1)
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture
def make_png(tmp_path):
    """Write a uint8 PNG ``(h, w, channels)`` under tmp_path and return its path."""

    def make(
        name: str, h: int = 24, w: int = 31, channels: int = 3, seed: int = 0
    ) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _photo(h, w, channels, seed)
        Image.fromarray(data[..., 0] if channels == 1 else data).save(path)
        return path

    return make


@pytest.fixture
def kernel_file(tmp_path):
    """Write a named synthetic kernel and return its path."""

    def make(kind: str = "diagonal", size=3, name: str | None = None, **kw) -> Path:
        path = tmp_path / (name or f"{kind}.npy")
        save_kernel(path, make_kernel(kind, size, **kw))
        return path

    return make
