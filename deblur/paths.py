"""Finding the images a command works on, where their outputs go, and their references.

Inputs are files, folders (searched recursively) and glob patterns.  Each
input keeps a *relative name*, its path below the folder or pattern it came
from, so outputs mirror the input layout and references pair by name:
``blurred/a/x.tif`` pairs with ``sharp/a/x.png``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "IMAGE_SUFFIXES",
    "PathError",
    "Source",
    "find_images",
    "output_path",
    "output_targets",
    "is_under",
    "glob_root",
    "ReferenceIndex",
    "pair_files",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class PathError(ValueError):
    """A path given on the command line that cannot be used."""


@dataclass(frozen=True)
class Source:
    """One input image: where it is and its name relative to where it was found."""

    path: Path
    relative: PurePosixPath

    @property
    def key(self) -> str:
        """The relative name without its extension, used to pair references."""
        return str(self.relative.with_suffix(""))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _walk(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if _is_image(p):
                found.append(p)
    return found


def glob_root(pattern: str) -> Path:
    """The part of a glob pattern before its first wildcard."""
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def find_images(inputs: list[str | Path]) -> list[Source]:
    """Expand files, folders and globs into sources, in a stable order.

    Raises
    ------
    PathError
        A path that does not exist, a folder with no images, a glob that
        matches nothing, or two inputs with the same relative name.
    """
    sources: list[Source] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            files = _walk(path)
            if not files:
                raise PathError(
                    f"{path}: folder holds no images "
                    f"({', '.join(IMAGE_SUFFIXES)}), searched recursively"
                )
            sources += [
                Source(f, PurePosixPath(f.relative_to(path).as_posix())) for f in files
            ]
        elif path.exists():
            sources.append(Source(path, PurePosixPath(path.name)))
        elif glob.has_magic(text):
            root = glob_root(text)
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file() and _is_image(m)]
            if not files:
                raise PathError(f"{text}: pattern matches no image files")
            sources += [
                Source(f, PurePosixPath(f.relative_to(root).as_posix())) for f in files
            ]
        else:
            raise PathError(f"{path}: no such file or folder")
    seen: dict[PurePosixPath, Path] = {}
    for s in sources:
        if s.relative in seen and seen[s.relative] != s.path:
            raise PathError(
                f"{s.path} and {seen[s.relative]} would both be written as "
                f"{s.relative}; restore them into different --out folders"
            )
        seen[s.relative] = s.path
    # the same file named twice is done once
    unique = {s.path.resolve(): s for s in sources}
    return list(unique.values())


def output_path(source: Source, out_dir: Path, suffix: str | None = None) -> Path:
    """Where ``source``'s result goes: its relative name under ``out_dir``."""
    target = out_dir / Path(*source.relative.parts)
    if suffix is not None:
        target = target.with_suffix(suffix)
    return target


def output_targets(
    sources: list[Source], out_dir: Path, suffix: str | None = None
) -> list[Path]:
    """Every source's output path, in order.

    Raises
    ------
    PathError
        If two sources would be written to one file (``x.png`` and ``x.jpg``
        both become ``x.tif`` with a ``.tif`` suffix).
    """
    targets = [output_path(s, out_dir, suffix) for s in sources]
    seen: dict[Path, Source] = {}
    for source, target in zip(sources, targets):
        if target in seen:
            raise PathError(
                f"{seen[target].path} and {source.path} would both be written as "
                f"{target}; rename one, or restore them into different --out folders"
            )
        seen[target] = source
    return targets


def is_under(path: Path, folder: Path) -> bool:
    """True if ``path`` lies inside ``folder`` (symbolic links resolved)."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
    except ValueError:
        return False
    return True


class ReferenceIndex:
    """Sharp references found by relative name, ignoring the extension.

    A reference *file* serves a single input; a *folder* is searched
    recursively.  An input ``8bit/a/x.png`` pairs with ``8bit/a/x.*`` and, if
    that is absent, with the unique ``a/x.*`` or ``x.*`` (the longest relative
    suffix that matches), so one folder of originals serves several folders of
    blurred copies.
    """

    def __init__(self, reference: str | Path):
        self.root = Path(reference)
        self.single: Path | None = None
        self.by_key: dict[str, list[Path]] = {}
        if self.root.is_dir():
            for f in _walk(self.root):
                key = f.relative_to(self.root).with_suffix("").as_posix()
                self.by_key.setdefault(key, []).append(f)
            if not self.by_key:
                raise PathError(f"{self.root}: reference folder holds no images")
        elif self.root.exists():
            self.single = self.root
        else:
            raise PathError(f"{self.root}: reference not found")

    def paths(self) -> set[Path]:
        """Every reference file, resolved (no output may replace one)."""
        if self.single is not None:
            return {self.single.resolve()}
        return {p.resolve() for hits in self.by_key.values() for p in hits}

    def find(self, source: Source) -> tuple[Path | None, str | None]:
        """Return ``(reference, None)`` or ``(None, why not)``."""
        if self.single is not None:
            return self.single, None
        parts = PurePosixPath(source.key).parts
        for start in range(len(parts)):
            key = "/".join(parts[start:])
            hits = self.by_key.get(key)
            if hits and len(hits) == 1:
                return hits[0], None
            if hits:
                same = [
                    h for h in hits if h.suffix.lower() == source.path.suffix.lower()
                ]
                if len(same) == 1:  # an exact name beats the others
                    return same[0], None
                names = ", ".join(h.name for h in hits)
                return None, f"several references match {key}: {names}"
        return None, f"no reference named {source.key}.* in {self.root}"


def pair_files(blurred: str | Path, sharp: str | Path) -> list[tuple[Path, Path, str]]:
    """Pair blurred and sharp images by relative name (ignoring the extension).

    Returns a list of ``(blurred_path, sharp_path, name)``.

    Raises
    ------
    PathError
        If either side is missing or empty, or if some blurred image has no
        sharp partner (all unmatched names are listed).
    """
    sources = find_images([blurred])
    if Path(blurred).is_file() and not Path(sharp).is_dir():
        if not Path(sharp).exists():
            raise PathError(f"{sharp}: no such file or folder")
        return [(sources[0].path, Path(sharp), sources[0].key)]
    index = ReferenceIndex(sharp)
    pairs, missing = [], []
    for s in sources:
        ref, why = index.find(s)
        if ref is None:
            missing.append(s.key)
        else:
            pairs.append((s.path, ref, s.key))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise PathError(
            f"{len(missing)} blurred image(s) in {blurred} have no sharp partner "
            f"in {sharp}: {shown}; pairs are matched by relative path"
        )
    return pairs
