"""masktopo.files: atomic writes onto regular files, symlinks and special files; input checks."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from masktopo import files
from masktopo.errors import MaskFileError


def test_atomic_write_replaces_a_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")
    files.atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new"
    assert [q.name for q in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")

    def fail(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(MaskFileError, match=r"a\.txt: cannot write \(No space left on device\)"):
        files.atomic_write(p, fail)
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_follows_a_symlink_to_its_target(tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    files.atomic_write_bytes(link, b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"  # the link stays a link
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "created.csv")
    files.atomic_write_bytes(dangling, b"x")
    assert dangling.is_symlink() and (tmp_path / "created.csv").read_bytes() == b"x"


def test_atomic_write_onto_a_character_device_writes_directly():
    files.atomic_write_bytes("/dev/null", b"discarded")  # not replaced by a regular file
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_atomic_write_onto_a_fifo_writes_directly(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    files.atomic_write_bytes(fifo, b"through the pipe")
    reader.join(timeout=10)
    assert got == [b"through the pipe"]
    assert fifo.is_fifo()  # still a FIFO


def test_atomic_write_refuses_folders_and_missing_parents(tmp_path):
    with pytest.raises(MaskFileError, match="it is a folder"):
        files.atomic_write_bytes(tmp_path, b"x")
    with pytest.raises(MaskFileError, match="does not exist"):
        files.atomic_write_bytes(tmp_path / "no" / "x.txt", b"x")
    (tmp_path / "a-file").write_text("")  # its "folder" is a file: said so, not "missing"
    for write in (lambda p: files.atomic_write_bytes(p, b"x"), files.writable_file):
        with pytest.raises(MaskFileError, match=r"'.*a-file' is a file, not a folder$"):
            write(tmp_path / "a-file" / "x.txt")


def test_input_path_refuses_special_files_and_names_link_problems(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    with pytest.raises(MaskFileError, match=r"pipe\.npz: is a FIFO \(named pipe\)"):
        files.input_path(fifo)
    zero = tmp_path / "zero.npz"
    zero.symlink_to("/dev/zero")
    with pytest.raises(MaskFileError, match="is a character device"):
        files.input_path(zero)
    loop = tmp_path / "loop.pt"
    loop.symlink_to(loop)
    with pytest.raises(MaskFileError, match="is a symlink loop"):
        files.input_path(loop)
    broken = tmp_path / "broken.pt"
    broken.symlink_to(tmp_path / "gone.pt")
    with pytest.raises(MaskFileError, match="is a broken symlink"):
        files.input_path(broken)
    with pytest.raises(MaskFileError, match="no such file or directory"):
        files.input_path(tmp_path / "missing.pt")
    assert files.input_path(tmp_path) == tmp_path


def test_check_not_inputs(tmp_path):
    a = tmp_path / "a.safetensors"
    a.write_bytes(b"x")
    link = tmp_path / "b.safetensors"
    link.symlink_to(a)
    with pytest.raises(MaskFileError, match="is also an input"):
        files.check_not_inputs(link, [a])
    files.check_not_inputs(tmp_path / "new.csv", [a])


def test_staging_moves_files_only_on_commit(tmp_path):
    out = tmp_path / "figs"
    with files.Staging(out, "figures") as st:
        (st.path / "a.png").write_bytes(b"a")
    assert not out.exists() and not list(tmp_path.iterdir())  # left without commit: nothing
    with files.Staging(out, "figures") as st:
        (st.path / "a.png").write_bytes(b"a")
        moved = st.commit([st.path / "a.png"])
    assert moved == [out / "a.png"] and (out / "a.png").read_bytes() == b"a"
    (tmp_path / "file").write_text("x")
    with pytest.raises(MaskFileError, match="cannot write figures there: it is a file"):
        files.Staging(tmp_path / "file", "figures")


def test_require_parquet_names_the_command_when_pyarrow_is_missing(monkeypatch):
    """One helper for every command that writes parquet (pags, search, prune-bench)."""
    import importlib.util

    from masktopo.errors import MaskValidationError
    from masktopo.files import require_parquet

    real = importlib.util.find_spec
    if real("pyarrow") is not None:
        require_parquet("search")  # present: nothing to say
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else real(name, *a))  # fmt: skip
    with pytest.raises(MaskValidationError, match=r"^masktopo pags writes candidates\.parquet, "
                       r"which needs pyarrow: pip install 'masktopo\[parquet\]'"):  # fmt: skip
        require_parquet("pags", "writes candidates.parquet")
    with pytest.raises(MaskValidationError, match="masktopo search reads and writes parquet"):
        require_parquet("search")
