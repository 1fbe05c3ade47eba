"""Write outputs to a temporary place and rename them when complete.

An existing output is never half-overwritten: every output is written under a
temporary name beside its destination (same filesystem, so the final move is a
rename) and moved into place only once all of a command's outputs are complete
(:func:`staged`). A failed run removes its temporary files and directories, and the
parent directories it created for them. Finished outputs get the modes the umask
gives (0o666 / 0o777 masked), like files any other tool writes, not the private
0o600 / 0o700 of ``tempfile``.

Outputs are checked before any work starts (:func:`check_writable`,
:func:`check_out_dir`): an unwritable destination is a one-line error, not a
traceback after the work.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deploykit.errors import DeployKitError


def _absolute(path: str | os.PathLike) -> Path:
    """``path`` made absolute and normalized (``.``, ``..``) without following symlinks.

    A symlinked output is replaced as a link, as ``mv`` would, not its target.
    """
    return Path(os.path.abspath(os.fspath(path)))


def current_umask() -> int:
    """The process umask, read without changing it where the kernel tells it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the only way is to set it and put it back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_mode(path: Path) -> None:
    """Give a finished temporary file or directory tree the modes the umask allows.

    ``mkstemp``/``mkdtemp`` (and some writers, e.g. safetensors) create 0o600/0o700 so
    that nobody reads a half-written output; once complete it must be as readable as
    any other file the user writes: 0o666 (0o777 for directories and executables)
    masked by the umask.
    """
    mask = current_umask()
    entries = [path]
    if path.is_dir() and not path.is_symlink():
        entries += list(path.rglob("*"))
    for p in entries:
        if p.is_symlink():
            continue
        executable = p.is_dir() or p.stat().st_mode & 0o100
        p.chmod((0o777 if executable else 0o666) & ~mask)


def check_writable(path: str | os.PathLike, what: str, directory: bool = False) -> None:
    """Refuse an output that cannot be written, before any work is done.

    The nearest existing ancestor of ``path`` must be a directory in which a file
    can be created (tried, then removed: permissions alone do not tell for root,
    /proc or a read-only mount); ``path`` itself must not be a directory when a
    file is wanted, nor a file when a directory is wanted.

    Args:
        path: the output.
        what: how the user named it in messages (``--json``, ``--onnx``, ...).
        directory: the output is a directory.

    Raises:
        DeployKitError: one line naming the output and what is wrong.
    """
    p = _absolute(path)
    if p.exists():
        if directory and not p.is_dir():
            raise DeployKitError(f"{what} {path} exists and is not a directory; give a directory path")
        if not directory and p.is_dir():
            raise DeployKitError(f"{what} {path} is a directory; give a file path")
    anc = p.parent
    while not anc.exists() and not anc.is_symlink() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise DeployKitError(f"{what} {path} cannot be written: {anc} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".deploykit-probe-", dir=anc)
    except OSError as e:
        raise DeployKitError(f"{what} {path} cannot be written: cannot create files in {anc} "
                             f"({e.strerror or type(e).__name__})") from None
    os.close(fd)
    os.unlink(probe)


def check_replaceable(path: str | os.PathLike, what: str = "output directory") -> None:
    """Refuse a filesystem root, the working directory or an ancestor of it as a directory to replace.

    Replacing one would move away the directory the process stands in (``--out .``).
    """
    shown = path
    real = _absolute(path).resolve()
    cwd = Path.cwd().resolve()
    if real == Path(real.anchor):
        raise DeployKitError(f"{what} {shown} is a filesystem root; give a new or empty directory, e.g. ./out")
    if real == cwd or real in cwd.parents:
        which = "the current directory" if real == cwd else "an ancestor of the current directory"
        raise DeployKitError(f"{what} {shown} is {which} and cannot be replaced; "
                             "give a new or empty subdirectory, e.g. ./out")


def check_out_dir(path: str | os.PathLike, force: bool, what: str = "output directory") -> None:
    """Refuse an output directory that cannot be (re)placed.

    Refused: a non-directory, a non-empty directory unless ``force``, a filesystem
    root, the working directory or an ancestor of it (replacing it would delete what
    the process stands in), and a place where nothing can be written.
    """
    p = _absolute(path)
    if p.exists() and not p.is_dir():
        raise DeployKitError(f"{what} {path} exists and is not a directory")
    check_replaceable(path, what)
    if p.is_dir() and any(p.iterdir()) and not force:
        raise DeployKitError(f"{what} {path} exists and is not empty; pass --force to replace it")
    check_writable(path, what, directory=True)


def _swap_dir(tmp: Path, dest: Path) -> None:
    """Replace ``dest`` by the complete directory ``tmp`` (two renames; the old one removed after)."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        old.rmdir()  # reserve a unique name only: rename needs it absent
        dest.rename(old)
    try:
        tmp.rename(dest)
    except BaseException:
        if old is not None:
            old.rename(dest)  # put the previous output back
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _move_file(src: Path, dest: Path) -> None:
    """``os.replace``, or a copy beside ``dest`` then a rename when they are on different filesystems."""
    try:
        os.replace(src, dest)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
        os.close(fd)
        try:
            shutil.copyfile(src, name)
            publish_mode(Path(name))
            os.replace(name, dest)
        finally:
            Path(name).unlink(missing_ok=True)


class Stage:
    """Outputs written under temporary names beside their destinations, moved into place together.

    Use through :func:`staged`. Outputs are moved in the order they were
    registered, so register what must exist first (a sidecar before its model: a
    reader that finds the new model also finds its description).
    """

    def __init__(self) -> None:
        self._moves: list[tuple[Path, Path, bool]] = []  # (temporary, destination, is a directory)
        self._temps: list[Path] = []  # everything to remove unless moved
        self._made: list[Path] = []  # parent directories this stage created
        self._committed = False

    def _parent(self, dest: Path) -> None:
        missing = []
        d = dest.parent
        while not d.exists() and not d.is_symlink():
            missing.append(d)
            d = d.parent
        if not d.is_dir():
            raise DeployKitError(f"cannot write {dest}: {d} is not a directory")
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                continue
            except OSError as e:
                raise DeployKitError(f"cannot create directory {d} for {dest} ({e.strerror})") from None
            self._made.append(d)

    def file(self, dest: str | os.PathLike) -> Path:
        """An empty temporary file beside ``dest`` that replaces it on commit."""
        d = _absolute(dest)
        if d.is_dir():
            raise DeployKitError(f"{dest} is a directory; give a file path to write")
        self._parent(d)
        try:
            fd, name = tempfile.mkstemp(prefix=f".{d.name}.tmp-", dir=d.parent)
        except OSError as e:
            raise DeployKitError(f"cannot write {dest}: {e.strerror or type(e).__name__} ({d.parent})") from None
        os.close(fd)
        tmp = Path(name)
        self._temps.append(tmp)
        self._moves.append((tmp, d, False))
        return tmp

    def dir(self, dest: str | os.PathLike, force: bool = False) -> Path:
        """An empty temporary directory beside ``dest`` that replaces it on commit."""
        d = _absolute(dest)
        check_out_dir(d, force)
        self._parent(d)
        tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.tmp-", dir=d.parent))
        self._temps.append(tmp)
        self._moves.append((tmp, d, True))
        return tmp

    def scratch(self, near: str | os.PathLike) -> Path:
        """A temporary working directory beside ``near`` (same filesystem), always removed."""
        d = _absolute(near)
        self._parent(d)
        tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.work-", dir=d.parent))
        self._temps.append(tmp)
        return tmp

    def put(self, src: str | os.PathLike, dest: str | os.PathLike, force: bool = False) -> None:
        """Move the finished file or directory ``src`` (in a :meth:`scratch` directory) to ``dest`` on commit."""
        s, d = Path(src), _absolute(dest)
        if s.is_dir():
            check_out_dir(d, force)
        elif d.is_dir():
            raise DeployKitError(f"{dest} is a directory; give a file path to write")
        self._parent(d)
        self._moves.append((s, d, s.is_dir()))

    def commit(self) -> None:
        """Move every output into place, in registration order."""
        for tmp, dest, is_dir in self._moves:
            publish_mode(tmp)
            if is_dir:
                _swap_dir(tmp, dest)
            else:
                _move_file(tmp, dest)
        self._committed = True

    def discard(self) -> None:
        """Remove every temporary; after a failed run, also the parent directories created for it."""
        for tmp in self._temps:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        if not self._committed:
            for d in reversed(self._made):
                with contextlib.suppress(OSError):
                    d.rmdir()  # only if still empty


@contextlib.contextmanager
def staged() -> Iterator[Stage]:
    """A :class:`Stage` committed when the block succeeds and discarded in every case.

    On an exception nothing is moved: every destination keeps its previous content.
    """
    stage = Stage()
    try:
        yield stage
        stage.commit()
    finally:
        stage.discard()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` when the block succeeds.

    On an exception the temporary directory is removed and ``path`` is untouched.
    """
    with staged() as stage:
        yield stage.dir(path, force)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path in the same directory; rename it over ``path`` on success."""
    with staged() as stage:
        yield stage.file(path)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
