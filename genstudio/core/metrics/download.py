"""Checked downloads: stream a file over HTTP(S), verify its SHA-256, then put it in place.

Used for model weights (Inception for FID). The file appears at `dest` only once its checksum
matched; a mismatch, a network error, a cancel or a crash leaves no partial or temporary file
(genstudio.core.runs.atomic does the temp-file/fsync/os.replace part)."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from genstudio.core.runs.atomic import atomic_path

__all__ = ["DownloadCancelled", "DownloadError", "download_file", "sha256_of"]

ProgressFn = Callable[[int, "int | None"], None]
StopFn = Callable[[], bool]

_HEX64 = re.compile(r"[0-9a-f]{64}")


class DownloadError(RuntimeError):
    """A download failed or was refused; the message is one line, fit for a status bar."""


class DownloadCancelled(DownloadError):
    """The caller's `should_stop` asked to stop; nothing was left behind."""


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Lower-case hex SHA-256 of a file, read in chunks so large weights need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download_file(
    url: str,
    dest: str | os.PathLike,
    sha256: str,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    chunk: int = 1 << 20,
    timeout: float = 60,
) -> Path:
    """Download `url` to `dest` and return `dest`; raises DownloadError unless the bytes hash
    to `sha256`. progress(done_bytes, total_bytes_or_None) is called as data arrives."""
    dest = Path(dest)
    expected = _checked_hex(sha256)
    if dest.is_file() and sha256_of(dest) == expected:
        return dest  # already here and intact: no network at all
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"refusing to download {url!r}: only http(s) URLs are supported")
    try:
        with atomic_path(dest) as tmp:
            actual = _stream_to(url, tmp, progress, should_stop, chunk, timeout)
            if actual != expected:
                raise DownloadError(
                    f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}"
                )
    except DownloadError:
        raise
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # it holds the open response; closing avoids a ResourceWarning later
        # urllib.error.URLError and socket timeouts are OSErrors; IncompleteRead is an
        # HTTPException. One line, with the cause chained for debugging.
        raise DownloadError(f"download of {url} failed: {_one_line(exc)}") from exc
    return dest


def _stream_to(
    url: str,
    tmp: Path,
    progress: ProgressFn | None,
    should_stop: StopFn | None,
    chunk: int,
    timeout: float,
) -> str:
    """Write the response body into `tmp`, hashing as it goes; return the hex digest."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "genstudio"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
        total = _content_length(response)
        done = 0
        _report(progress, done, total)
        while block := response.read(chunk):
            if should_stop is not None and should_stop():
                raise DownloadCancelled(f"download of {url} cancelled")
            out.write(block)
            digest.update(block)
            done += len(block)
            _report(progress, done, total)
        if total is not None and done != total:
            raise DownloadError(f"download of {url} ended early: {done} of {total} bytes")
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _report(progress: ProgressFn | None, done: int, total: int | None) -> None:
    if progress is not None:
        progress(done, total)


def _checked_hex(sha256: str) -> str:
    # A typo'd checksum would make every download "fail"; say so instead.
    value = str(sha256).strip().lower()
    if not _HEX64.fullmatch(value):
        raise DownloadError(f"not a SHA-256 hex digest: {sha256!r}")
    return value


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return " ".join(str(exc).split()) or type(exc).__name__
