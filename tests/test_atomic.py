import pytest

from deploykit.atomic import atomic_dir, atomic_file
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
