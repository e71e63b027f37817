"""What every data set shares: the cache folder, finding the data folder, downloads, MD5 checksums, and the
one-line DataError.

The tasks' loaders (tasks/corpus.py for text, tasks/images.py for image trees and archives, tasks/mnist.py for IDX
files) find their files through these; a missing, unreadable or corrupt data set is a DataError whose message says
how to fix it.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable

from repro.errors import UsageError

DOWNLOAD_TIMEOUT_S = 30


class DataError(UsageError):
    """A data set is missing, unreadable or corrupt; the message says how to fix it (one line)."""


def cache_root() -> Path:
    """Where downloads, unpacked archives and decoded tensors live: $REPRO_CACHE_DIR, else ~/.cache/repro (never
    the repository)."""
    return Path(os.environ.get("REPRO_CACHE_DIR") or Path.home() / ".cache" / "repro").expanduser()


# (resolved path, size, mtime_ns) -> md5: a file is hashed once per process, not once per use.
_MD5_CACHE: dict[tuple[str, int, int], str] = {}


def file_md5(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _MD5_CACHE:
        h = hashlib.md5()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _MD5_CACHE[key] = h.hexdigest()
    return _MD5_CACHE[key]


def bytes_md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def check_md5(path: Path, expected: str | tuple[str, ...], actual: str | None = None, *, what: str = "",
              fix: str = "replace it with the original file") -> None:
    """A DataError unless ``path`` has one of the ``expected`` MD5s. ``actual``: a digest the caller took of what
    the file holds (e.g. decompressed), named by ``what`` in the message."""
    expected = (expected,) if isinstance(expected, str) else tuple(expected)
    if actual is None:
        try:
            actual = file_md5(path)
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror or e}") from e
    if actual not in expected:
        raise DataError(f"{path} has{what} md5 {actual}, expected {' or '.join(expected)}: {fix}")


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        return response.read()


def write_atomic(path: Path, data: bytes) -> None:
    """A file that appears whole or not at all (a crash or full disk never leaves half a file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve_data_dir(given: str | os.PathLike | None, env_var: str, default: str | os.PathLike, *, label: str,
                     missing: Callable[[Path], list[str]], download: Callable[[Path, list[str]], None] | None,
                     advice: Callable[[Path, list[str]], str]) -> Path:
    """The folder of a data set: ``given`` (--data-dir), else $``env_var``, else ``default``. The files that
    ``missing(folder)`` names are fetched by ``download(folder, names)`` when there is one and the network
    allows; whatever is still missing is the one-line DataError ``advice(folder, names)``. Checksums are the
    caller's (``check_md5``), as each data set verifies differently."""
    directory = Path(given or os.environ.get(env_var) or default).expanduser()
    if directory.exists() and not (directory.is_dir() and os.access(directory, os.R_OK | os.X_OK)):
        raise DataError(f"{label} data folder {directory} is not a readable directory")
    absent = missing(directory)
    if absent and download is not None:
        created = [p for p in (directory, *directory.parents) if not p.exists()]
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if not os.access(directory, os.W_OK):
                raise PermissionError(directory)
            download(directory, absent)
        except Exception as e:  # offline, HTTP error, read-only folder, bad archive: the same advice
            if created:  # leave none of the folders made here behind while empty (downloaders add their own)
                for folder, _, _ in sorted(os.walk(created[-1]), key=lambda w: -len(w[0])):
                    try:
                        os.rmdir(folder)
                    except OSError:
                        pass
            raise DataError(advice(directory, absent)) from e
        absent = missing(directory)
    if absent:
        raise DataError(advice(directory, absent))
    return directory
