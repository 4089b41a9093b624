"""graph.files: atomic writes and the one check that keeps client-supplied names inside their folder."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from graph.files import PathEscapeError, PathOutsideError, atomic_write, check_name_part, confined_path, unique_name


def test_atomic_write_creates_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "out.png"
    assert atomic_write(target, b"first") == target
    atomic_write(target, "second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]
    assert (target.stat().st_mode & 0o777) == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "keep.txt"
    atomic_write(target, b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "busy.bin"
    big, small = b"A" * 2_000_000, b"B" * 10
    atomic_write(target, small)
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(len(target.read_bytes()))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(20):
        atomic_write(target, big if i % 2 else small)
    stop.set()
    reader.join()
    assert seen <= {len(big), len(small)}


@pytest.mark.parametrize("name", ["../x", "a/../../x", "..", "/etc/passwd", "C:\\x", "C:x", "..\\x", "a\\..\\..\\x",
                                  "x\x00y", "x\ny", "\uff0e\uff0e/x", "a/\uff0e\uff0e"])
def test_names_that_could_leave_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(PathEscapeError):
        confined_path(tmp_path, name)


def test_plain_names_resolve_inside(tmp_path: Path) -> None:
    assert confined_path(tmp_path, "a/b", "c.png") == tmp_path.resolve() / "a" / "b" / "c.png"
    assert confined_path(tmp_path, "", "c.png") == tmp_path.resolve() / "c.png"
    assert confined_path(tmp_path, "a\\b", "./c.png") == tmp_path.resolve() / "a" / "b" / "c.png"
    assert confined_path(tmp_path, "..x", "x..") == tmp_path.resolve() / "..x" / "x.."
    assert check_name_part("sub//dir/") == "sub/dir"


def test_symlinks_out_of_the_folder_are_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("x")
    os.symlink(outside, root / "door")
    os.symlink(outside / "secret", root / "file")
    (root / "inner").mkdir()
    os.symlink(root / "inner", root / "alias")
    with pytest.raises(PathOutsideError):
        confined_path(root, "door", "secret")
    with pytest.raises(PathOutsideError):
        confined_path(root, "file")
    assert confined_path(root, "alias", "ok.png") == (root / "inner" / "ok.png").resolve()


def test_unique_name(tmp_path: Path) -> None:
    assert unique_name(tmp_path, "a.png") == "a.png"
    (tmp_path / "a.png").write_text("")
    (tmp_path / "a (1).png").write_text("")
    assert unique_name(tmp_path, "a.png") == "a (2).png"
    (tmp_path / "noext").write_text("")
    assert unique_name(tmp_path, "noext") == "noext (1)"
