# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Where results go: their names, output folders, and writing files so that no partial or stale file is left.

Every result of an image ``<dataset>/X.<ext>`` is ``<output_dir>/X<kind>.<ext>`` with a kind of
:data:`RESULT_KINDS`; :func:`result_path` is the one place that names them. Files are written under a hidden
temporary name and renamed when complete (:func:`atomic_path`); a temporary left by a run that was killed is
removed when the next run starts writing to that folder (:func:`remove_stale_temporaries`).

This module knows no image format (``scripts.io`` does), so every module may import it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import BundleInputError

#: What inference writes for an image ``X``: ``X_prob`` (membrane probability), ``X_seg`` (cells), ``X_cells.csv``
#: (morphology table), ``X_overlay.png`` and ``X_morphology.png`` (plots).
RESULT_KINDS = ("_prob", "_seg", "_cells", "_overlay", "_morphology")

_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
# ".<target name>.<host>-<pid>.<random>.part": the host and process that write it, so a later run can tell a
# temporary of a killed run (its process is gone) from one another run is still writing
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.part$")


def result_path(output_dir: str | os.PathLike, stem: str, kind: str, extension: str) -> str:
    """``<output_dir>/<stem><kind>.<extension>``, e.g. ``out/x_prob.tif``; ``kind`` is one of :data:`RESULT_KINDS`."""
    if kind not in RESULT_KINDS:
        raise ValueError(f"unknown result kind {kind!r}, expected one of {RESULT_KINDS}")
    return os.path.join(str(output_dir), f"{stem}{kind}.{extension.lstrip('.')}")


#: The longest ending :func:`result_path` gives a result's name: the morphology plot, ``X_morphology.png``.
LONGEST_RESULT_ENDING = "_morphology.png"
#: The longest file name (bytes) where the file system does not say: ext4, XFS, Btrfs, APFS, NTFS (characters).
DEFAULT_NAME_MAX = 255


def name_limit(folder: str | os.PathLike) -> int:
    """The longest file name, in bytes, that the file system holding ``folder`` (or, before it is made, its nearest
    existing parent) allows: ``pathconf``'s NAME_MAX, else :data:`DEFAULT_NAME_MAX`."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return int(os.pathconf(path, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or the file system does not tell
        return DEFAULT_NAME_MAX


def check_result_name_length(image: str | os.PathLike, stem: str, output_dir: str | os.PathLike) -> None:
    """Refuse ``image`` if the names of its results (``<stem>_morphology.png`` the longest) would be longer than the
    file system of ``output_dir`` allows, before any work: otherwise its first write would fail, after the network
    ran, with the file system's "File name too long"."""
    longest = f"{stem}{LONGEST_RESULT_ENDING}"
    size, limit = len(os.fsencode(longest)), name_limit(output_dir)
    if size > limit:
        keep = limit - len(os.fsencode(LONGEST_RESULT_ENDING))
        raise BundleInputError(
            image,
            f"its results' names ({stem[:12]}...{LONGEST_RESULT_ENDING}, {size} bytes) would be longer than the "
            f"{limit} bytes a file name may have in {output_dir}",
            f"rename it to at most {keep} characters before the extension (results are named after it)",
        )


def is_result_stem(stem: str) -> bool:
    """Whether a file stem ends like a result of inference (``x_prob``, ``x_seg``, ``x_overlay``, ...)."""
    return any(stem.endswith(kind) and len(stem) > len(kind) for kind in RESULT_KINDS)


def make_output_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) if missing; a ``BundleInputError`` naming it if that fails."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BundleInputError(
            folder, f"output folder cannot be created ({e.strerror})", "choose a writable --output_dir"
        ) from e
    return folder


def _host() -> str:
    """This machine's name as it goes into temporary names (no dots or dashes, which separate the name's parts)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def temporary_tag() -> str:
    """``<host>-<pid>``: the part of a temporary's name that tells which machine and process write it."""
    return f"{_host()}-{os.getpid()}"


def temporary_prefix(path: str | os.PathLike, room: int) -> str:
    """``.<name>.<host>-<pid>.``: the start of the name of ``path``'s temporary, beside it, with ``room`` bytes left
    for the rest (a random part, ``.part``). ``<name>`` is ``path``'s name, cut where the whole would be longer
    than the folder's file system allows (:func:`name_limit`): a result whose own name fits must not fail on its
    temporary's longer one. The cut name still tells a person whose temporary it is."""
    path = Path(path)
    tail = f".{temporary_tag()}."
    room_for_name = name_limit(path.parent) - len(os.fsencode(tail)) - room - 1
    name = os.fsencode(path.name)[: max(room_for_name, 1)].decode(errors="ignore") or "_"
    return f".{name}{tail}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove the temporaries (:func:`atomic_path`, and zarr folders being written by ``scripts.io.create_zarr``)
    that killed runs on this machine left in ``folder``.

    A run killed while writing (SIGKILL, power loss) cannot remove its temporary; the next run writing to the
    folder does, here. Only temporaries of this machine whose process is gone are removed, so runs writing to the
    same folder at the same time (several processes, several machines on a shared disk) never lose theirs.

    Returns:
        the names removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    host = _host()
    for path in folder.iterdir():
        match = _TEMPORARY.match(path.name)
        if match and match["host"] == host and not _process_alive(int(match["pid"])):
            try:
                if path.is_dir() and not path.is_symlink():  # a zarr folder (scripts.io.create_zarr)
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path.name)
            except OSError:  # removed by another run meanwhile, or not ours to remove: leave it
                pass
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary name beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary file (``.<name>.<host>-<pid>.<random>.part``) is removed on any failure, Ctrl-C included. A full
    disk, a quota, a read-only file system or a permission error while writing becomes a ``BundleInputError`` that
    names ``path``.
    """
    path = Path(path)
    make_output_folder(path.parent)
    if not os.access(path.parent, os.W_OK):
        raise BundleInputError(path.parent, "output folder is not writable", "choose a writable --output_dir")
    try:
        prefix = temporary_prefix(path, len(".part") + 8)  # mkstemp adds 8 random characters
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=path.parent)
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise _name_too_long(path) from e
        problem = f"output folder is not writable ({e.strerror})"
        raise BundleInputError(path.parent, problem, "choose a writable --output_dir") from e
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:
            raise _name_too_long(path) from e
        if isinstance(e, OSError) and e.errno in _DISK_ERRORS:
            fix = f"free space in {path.parent} or choose another --output_dir"
            raise BundleInputError(path, f"could not be written ({os.strerror(e.errno)})", fix) from e
        raise


def _name_too_long(path: Path) -> BundleInputError:
    """The error for a ``path`` whose name (or whole path) the file system refuses as too long."""
    size, limit = len(os.fsencode(path.name)), name_limit(path.parent)
    if size > limit:
        problem = f"the name is {size} bytes, longer than the {limit} a file name may have here"
        return BundleInputError(path, problem, "use a shorter name (results are named after their input)")
    return BundleInputError(
        path, "the path is too long for the file system", "choose an --output_dir with a shorter path"
    )
