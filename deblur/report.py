"""Reports: one record per image, written as JSON or CSV (chosen by extension)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

__all__ = ["RESULT_FIELDS", "write_report", "clean"]

#: the fields of one image's record, in report order
RESULT_FIELDS = (
    "input",
    "output",
    "reference",
    "method",
    "width",
    "height",
    "channels",
    "bit_depth",
    "psnr_before",
    "psnr_after",
    "ssim_before",
    "ssim_after",
    "data_range",
    "clipped",
    "seconds",
    "solve_seconds",
    "error",
    "reference_error",
    "notes",
)


def clean(value):
    """Make ``value`` JSON-safe: non-finite floats become ``None``, paths strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def _csv_text(results: list[dict], fields) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in results:
        flat = {}
        for k in fields:
            v = clean(row.get(k))
            flat[k] = "; ".join(map(str, v)) if isinstance(v, list) else v
        writer.writerow(flat)
    return buffer.getvalue()


def write_report(
    path: str | Path, results: list[dict], *, fields=None, **header
) -> Path:
    """Write ``results`` to ``path`` atomically: ``.json`` or ``.csv``.

    JSON holds the ``header`` objects (for example ``kernel``) and a
    ``results`` list; CSV holds one row per result (the header is left out),
    with ``fields`` (default :data:`RESULT_FIELDS`) first and any other keys
    after them.  Non-finite numbers (an infinite PSNR of identical images) become null.

    Raises
    ------
    ValueError
        If the extension is neither ``.json`` nor ``.csv``.
    """
    from .atomic import write_text_atomic

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        doc = {**clean(header), "results": clean(results)}
        text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    elif suffix == ".csv":
        fields = list(fields or RESULT_FIELDS)
        for row in results:
            fields += [k for k in row if k not in fields]
        text = _csv_text(results, fields)
    else:
        raise ValueError(
            f"{path}: report format is chosen by extension, got "
            f"{suffix or 'none'!r}; use .json or .csv"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path
