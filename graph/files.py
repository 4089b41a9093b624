"""Files the engine writes and serves: atomic writes, and names confined to their folder.

`atomic_write` is how every output reaches the disk (a reader never sees half a PNG, a crash never
leaves one). `confined_path` is the one check that a user-supplied relative name stays inside its
folder: the server's file routes and the model folders both use it.
"""
from __future__ import annotations

import os
import tempfile
import unicodedata
from pathlib import Path

__all__ = ["PathEscapeError", "PathOutsideError", "atomic_write", "check_name_part", "confined_path",
           "unique_name"]


MAX_PART_BYTES = 255  # NAME_MAX of Linux, macOS and Windows file systems
MAX_NAME_BYTES = 1024

# Bidirectional marks, embeddings, overrides and isolates: "x\u202egnp.exe" shows as "xexe.png".
_DIRECTION_MARKS = frozenset("\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class PathEscapeError(ValueError):
    """A user-supplied name that is not a plain relative path inside its folder."""


class PathOutsideError(PathEscapeError):
    """A well-formed relative name that still leads outside its folder (through a symlink)."""


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o644) -> Path:
    """Write data to path all at once: a temp file in the same folder, fsync, then os.replace."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(target.parent)
    return target


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_name_part(part: str, what: str = "name") -> str:
    """A client-supplied relative name with '/' separators, or PathEscapeError if it could leave its folder.

    Backslashes count as separators (workflows saved on Windows use them); control characters
    (C0 and C1), direction overrides that make a name read differently from what it is, lone
    surrogates, absolute paths and '..' (also as full-width look-alikes that normalise to it) are refused.
    """
    if not isinstance(part, str):
        raise PathEscapeError(f"{what} {part!r} must be a string")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in part):
        raise PathEscapeError(f"{what} {part!r} contains a control character")
    if any(c in _DIRECTION_MARKS or "\ud800" <= c <= "\udfff" for c in part):
        raise PathEscapeError(f"{what} {part!r} contains a text-direction mark or a lone surrogate")
    norm = part.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":" and norm[0].isalpha()):
        raise PathEscapeError(f"{what} {part!r} is an absolute path; it must be relative to its folder")
    for form in {norm, unicodedata.normalize("NFKC", norm).replace("\\", "/")}:
        if any(piece == ".." for piece in form.split("/")):
            raise PathEscapeError(f"{what} {part!r} contains '..'; it must stay inside its folder")
    # The file system refuses longer names with an error of its own; say so here, in the caller's terms.
    if len(norm.encode("utf-8")) > MAX_NAME_BYTES or any(len(p.encode("utf-8")) > MAX_PART_BYTES
                                                         for p in norm.split("/")):
        raise PathEscapeError(f"{what} {part[:40]!r}... is too long: at most {MAX_PART_BYTES} bytes per folder or "
                              f"file name and {MAX_NAME_BYTES} in all")
    return "/".join(piece for piece in norm.split("/") if piece not in ("", "."))


def confined_path(base: str | os.PathLike[str], *parts: str, what: str = "path") -> Path:
    """base/parts... resolved, refusing '..', absolute parts, odd characters and symlinks that lead outside base."""
    root = Path(base).resolve()
    relative = [p for p in (check_name_part(part, what) for part in parts) if p]
    candidate = root.joinpath(*relative)
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise PathOutsideError(f"{what} {'/'.join(relative)!r} resolves outside its folder {root}")
    return resolved


def unique_name(folder: Path, filename: str) -> str:
    """filename, or 'stem (1).ext', 'stem (2).ext'... whichever does not exist in folder yet."""
    stem, dot, ext = filename.rpartition(".")
    if not dot:
        stem, ext = filename, ""
    counter = 1
    name = filename
    while (folder / name).exists():
        name = f"{stem} ({counter}){dot}{ext}"
        counter += 1
    return name
