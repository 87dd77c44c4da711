"""Write files atomically: a reader sees the old file or the new one, never half.

Every output that deblur writes (restored images, kernels, reports) goes
through :func:`atomic_path`: the writer fills a temporary file beside the
target, and the temporary file is renamed onto the target only when the
writer returned normally. An exception, a ``KeyboardInterrupt`` included,
removes the temporary file and leaves the target as it was.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> with atomic_path(folder / "out.txt") as tmp:
...     _ = tmp.write_text("done")
>>> (folder / "out.txt").read_text()
'done'
>>> sorted(p.name for p in folder.iterdir())
['out.txt']
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = [
    "TEMP_MARKER",
    "atomic_path",
    "atomic_write",
    "is_atomic_temp",
    "write_bytes_atomic",
    "write_text_atomic",
]

#: Part of every temporary name, ``.<stem>.<token>.tmp<suffix>``; a file left
#: behind by a killed process (``SIGKILL`` gives no chance to clean up) can be
#: recognised with :func:`is_atomic_temp`.
TEMP_MARKER = ".tmp"

_MAX_STEM = 64
_MAX_TRIES = 100
_WRITE_MODES = frozenset({"w", "wt", "wb"})


def is_atomic_temp(path: str | os.PathLike) -> bool:
    """Tell whether `path` is named like a temporary file of :func:`atomic_path`.

    Folder scans (for example the inputs of ``deblur restore``) use it to skip
    the leftovers of an interrupted run.

    Parameters
    ----------
    path : str or path-like
        Any file name or path; only the name is looked at.

    Returns
    -------
    is_temp : bool
        True for names of the form ``.<stem>.<12 hex digits>.tmp<suffix>``.
    """
    name = Path(path).name
    if not name.startswith("."):
        return False
    parts = name[1:].split(".")
    # ".<stem>.<token>.tmp[.<ext>]": the marker is the last or the one before.
    for i in (len(parts) - 1, len(parts) - 2):
        if i >= 2 and parts[i] == TEMP_MARKER[1:]:
            token = parts[i - 1]
            return len(token) == 12 and all(c in "0123456789abcdef" for c in token)
    return False


def _reserve_temp(target: Path) -> Path:
    """Create an empty, uniquely named file beside `target` and return its path.

    ``O_EXCL`` makes the name unique even between processes writing into one
    folder; the mode ``0o666`` lets the umask decide the permissions, as for
    any newly created file.
    """
    stem = target.stem[:_MAX_STEM]
    for _ in range(_MAX_TRIES):
        name = f".{stem}.{secrets.token_hex(6)}{TEMP_MARKER}{target.suffix}"
        tmp = target.with_name(name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(
        f"could not create a unique temporary file beside {target} after "
        f"{_MAX_TRIES} tries; check the folder for leftover '.*{TEMP_MARKER}*' files"
    )


def _fsync(path: Path) -> None:
    """Flush the file's data to the disk, so a crash cannot leave it empty."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move `tmp` onto `target`, refusing an existing target unless `overwrite`."""
    if overwrite:
        os.replace(tmp, target)
        return

    # A hard link fails if the target exists, atomically, so two processes
    # cannot both "create" the same output.
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise FileExistsError(
            errno.EEXIST,
            f"{target} already exists; remove it or allow overwriting",
        ) from None
    except OSError:
        # The filesystem has no hard links: check, then rename (not race-free).
        if target.exists():
            raise FileExistsError(
                errno.EEXIST,
                f"{target} already exists; remove it or allow overwriting",
            ) from None
        os.replace(tmp, target)
        return
    tmp.unlink()


@contextmanager
def atomic_path(
    target: str | os.PathLike, *, overwrite: bool = True, fsync: bool = True
) -> Iterator[Path]:
    """Yield a temporary path beside `target`; move it onto `target` on success.

    The temporary file has the target's suffix, so writers that choose the
    format by extension (Pillow, tifffile, ``numpy.save``) work on it. It
    exists, empty, when the body starts; the body overwrites it.

    Parameters
    ----------
    target : str or path-like
        The file to create or replace. Its folder must exist.
    overwrite : bool, default True
        Replace an existing `target`. With False an existing target raises
        ``FileExistsError``, checked again at the final step without a race
        (by a hard link) where the filesystem supports hard links.
    fsync : bool, default True
        Flush the temporary file to the disk before the rename, so that a
        power failure leaves the old file or the complete new one.

    Yields
    ------
    tmp : Path
        Where the body writes. Unique per call, also between processes.

    Raises
    ------
    FileNotFoundError
        If the target's folder does not exist, or the body deleted `tmp`.
    FileExistsError
        If `target` exists and `overwrite` is False.

    Notes
    -----
    The temporary file is removed on any exception in the body, including
    ``KeyboardInterrupt``; only a process killed outright (``SIGKILL``, power
    loss) leaves one behind, named ``.<stem>.<token>.tmp<suffix>``
    (see :func:`is_atomic_temp`). The rename is atomic on POSIX filesystems
    and on NTFS; the folder entry itself is not fsynced.
    """
    target = Path(target)
    if not target.parent.is_dir():
        raise FileNotFoundError(
            errno.ENOENT,
            f"cannot write {target}: the folder {target.parent} does not exist; "
            "create it first",
        )
    if not overwrite and target.exists():
        raise FileExistsError(
            errno.EEXIST, f"{target} already exists; remove it or allow overwriting"
        )

    tmp = _reserve_temp(target)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(
                errno.ENOENT,
                f"the temporary file {tmp} for {target} disappeared before it "
                "could be moved into place; write to the yielded path itself",
            )
        if fsync:
            _fsync(tmp)
        _commit(tmp, target, overwrite)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(
    target: str | os.PathLike,
    mode: str = "wb",
    *,
    encoding: str | None = None,
    newline: str | None = None,
    overwrite: bool = True,
    fsync: bool = True,
) -> Iterator[IO]:
    """Yield an open file whose contents replace `target` on success.

    Parameters
    ----------
    target : str or path-like
        The file to create or replace.
    mode : {"wb", "w", "wt"}, default "wb"
        Binary or text writing.
    encoding, newline : str, optional
        Passed to :func:`open` in text mode; `encoding` defaults to UTF-8.
    overwrite, fsync : bool
        As for :func:`atomic_path`.

    Yields
    ------
    file : file object
        Closed by the context manager; do not close it in the body.

    Raises
    ------
    ValueError
        If `mode` is not a plain write mode.
    """
    if mode not in _WRITE_MODES:
        raise ValueError(
            f"atomic_write mode must be one of {sorted(_WRITE_MODES)}, got {mode!r}; "
            "appending or reading makes no sense for a file written whole"
        )
    if "b" not in mode and encoding is None:
        encoding = "utf-8"

    with atomic_path(target, overwrite=overwrite, fsync=fsync) as tmp:
        with open(tmp, mode, encoding=encoding, newline=newline) as file:
            yield file


def write_text_atomic(
    target: str | os.PathLike,
    text: str,
    *,
    encoding: str = "utf-8",
    overwrite: bool = True,
) -> Path:
    """Write `text` to `target` atomically and return the target's path.

    Newlines are written as given (no translation), so the bytes on disk do
    not depend on the platform.
    """
    with atomic_write(
        target, "w", encoding=encoding, newline="", overwrite=overwrite
    ) as file:
        file.write(text)
    return Path(target)


def write_bytes_atomic(
    target: str | os.PathLike, data: bytes, *, overwrite: bool = True
) -> Path:
    """Write `data` to `target` atomically and return the target's path."""
    with atomic_write(target, "wb", overwrite=overwrite) as file:
        file.write(data)
    return Path(target)
