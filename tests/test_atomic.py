import os

import pytest

from deploykit.atomic import atomic_dir, atomic_file, check_out_dir, check_writable, staged
from deploykit.errors import DeployKitError


def test_atomic_dir_failure_leaves_existing_output_untouched(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out, force=True) as tmp:
        (tmp / "half.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert (out / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no temp dirs left


def test_atomic_dir_force_replaces_only_when_complete(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_dir(out, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (out / "old.txt").exists()  # still the old one while writing
    assert [p.name for p in out.iterdir()] == ["new.txt"]


def test_non_empty_output_refused_without_force(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(DeployKitError, match="not empty; pass --force"):
        with atomic_dir(out):
            pass


def test_atomic_file_renames_on_success_only(tmp_path):
    f = tmp_path / "a.json"
    f.write_text("old")
    with pytest.raises(ValueError), atomic_file(f) as tmp:
        tmp.write_text("partial")
        raise ValueError
    assert f.read_text() == "old"
    with atomic_file(f) as tmp:
        tmp.write_text("new")
    assert f.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


# -- staging, modes, places that cannot be replaced or written ------------------------------
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_staged_moves_everything_in_order_or_nothing(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "sub" / "deeper" / "b.bin"
    a.write_text("old")
    with pytest.raises(RuntimeError), staged() as stage:
        stage.file(a).write_text("new")
        stage.file(b).write_bytes(b"new")
        raise RuntimeError("a later check failed")
    assert a.read_text() == "old"
    # the directories created for b are gone too, and no temporary is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    with staged() as stage:
        stage.file(a).write_text("new")
        stage.file(b).write_bytes(b"new")
    assert a.read_text() == "new" and b.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "b.bin", "deeper", "sub"]


def test_staged_put_from_scratch_and_scratch_always_removed(tmp_path):
    dest = tmp_path / "m.onnx"
    with staged() as stage:
        work = stage.scratch(dest)
        (work / "x").write_text("model")
        (work / "x.json").write_text("sidecar")
        stage.put(work / "x.json", tmp_path / "m.onnx.json")
        stage.put(work / "x", dest)
    assert dest.read_text() == "model" and (tmp_path / "m.onnx.json").read_text() == "sidecar"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json"]


@pytest.mark.usefixtures("umask_022")
def test_outputs_get_the_umask_modes_not_tempfile_ones(tmp_path):
    with atomic_dir(tmp_path / "art") as tmp:
        (tmp / "w.bin").write_bytes(b"x")
        (tmp / "w.bin").chmod(0o600)  # as safetensors leaves its files
        (tmp / "run.sh").write_text("#!/bin/sh\n")
        (tmp / "run.sh").chmod(0o700)
    with atomic_file(tmp_path / "f.json") as tmp:
        tmp.write_text("{}")
    mode = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    assert mode == {"art": 0o755, "w.bin": 0o644, "run.sh": 0o755, "f.json": 0o644}
    old = os.umask(0o027)
    try:
        with atomic_file(tmp_path / "g.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "g.json").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("where", [".", "..", "/"])
def test_cwd_its_ancestors_and_roots_are_never_replaced(where, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("keep")
    monkeypatch.chdir(work)
    with pytest.raises(DeployKitError, match="cannot be replaced|filesystem root"), atomic_dir(where, force=True):
        pass
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keep.txt", "work"]


@pytest.mark.parametrize(
    "make, directory, message",
    [
        (lambda t: "/proc/deploykit-x.json", False, "cannot create files in /proc"),
        (lambda t: t / "file" / "r.json", False, "file is not a directory"),
        (lambda t: t / "file" / "a" / "b", True, "file is not a directory"),
        (lambda t: t / "adir", False, "is a directory; give a file path"),
        (lambda t: t / "file", True, "exists and is not a directory"),
    ],
)
def test_check_writable_refuses_in_one_line(make, directory, message, tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "adir").mkdir()
    with pytest.raises(DeployKitError, match=message) as e:
        check_writable(make(tmp_path), "--out", directory=directory)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "file"]  # the probe leaves nothing


def test_check_writable_accepts_new_nested_paths(tmp_path):
    check_writable(tmp_path / "new" / "deeper" / "r.json", "--json")
    check_out_dir(tmp_path / "new" / "art", force=False)
    assert list(tmp_path.iterdir()) == []


def test_atomic_file_on_a_directory_is_a_user_error(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(DeployKitError, match="is a directory"), atomic_file(tmp_path / "d"):
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
