"""Durable writes: nothing appears under its final name until every byte of it is on disk.

A file or folder is written under a staging name beside its final one (same file
system), fsynced with the folder that holds it, then renamed into place. A kill, a
full disk or a power loss leaves the old version or the new one, never half of one.
Staging names are `.NAME.partial-TAG`; a folder being replaced is first moved aside
to `.NAME.old-TAG` and removed once the new one is in. `remove_staging` clears what
a killed writer left behind. Every OSError (and the disk-full errors that
safetensors' writer raises as text) becomes an EnvironmentFault that says what was
being written and how much room is left.
"""

import contextlib
import errno
import hashlib
import os
import shutil
import uuid

from ..errors import EnvironmentFault

PARTIAL, OLD = ".partial-", ".old-"


def staging_path(final, tag=None):
    """`.NAME.partial-TAG` beside `final`; a random TAG unless every process must agree on it."""
    head, name = os.path.split(os.path.abspath(os.fspath(final)))
    return os.path.join(head, f".{name}{PARTIAL}{tag or uuid.uuid4().hex[:8]}")


def file_sha256(path):
    """The sha256 of a file's bytes (what a download or a checkpoint is verified against)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync(path):
    """fsync one file or folder (a folder's fsync makes the names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root):
    """fsync every file under `root`, then every folder, deepest first: data before the names that point to it."""
    for dirpath, _, files in os.walk(root, topdown=False):
        for name in files:
            if not os.path.islink(os.path.join(dirpath, name)):
                fsync(os.path.join(dirpath, name))
        fsync(dirpath)


def environment_fault(exc, what, where=None):
    """An EnvironmentFault for an OSError (or a writer's disk-full error) met while `what`, saying what is free."""
    try:
        room = f"{shutil.disk_usage(where or os.getcwd()).free / 2**20:,.1f} MiB free there"
    except OSError:
        room = "free space unknown"
    if getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS):
        return EnvironmentFault(f"{exc.strerror or exc} while {what}: choose a folder you can write to or fix its "
                                "permissions")
    full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(
        s in str(exc) for s in ("No space left on device", "os error 28", "Disk quota exceeded"))
    cause = "no space left on the disk" if full else f"{type(exc).__name__}: {exc}"
    return EnvironmentFault(f"{what} failed ({cause}; {room}): free disk space (df -h shows which disk is full) or "
                            "choose a folder on a larger disk, and run the same command again; nothing was published")


def _is_environment(exc):
    return isinstance(exc, OSError) or "os error 28" in str(exc) or "No space left on device" in str(exc)


@contextlib.contextmanager
def staged_file(final, mode="w", encoding="utf-8"):
    """Yield an open staging file; on a clean exit it is fsynced and renamed to `final`, on an error removed."""
    tmp = staging_path(final)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync(os.path.dirname(os.path.abspath(final)))
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if _is_environment(e) and not isinstance(e, EnvironmentFault):
            raise environment_fault(e, f"writing {final}", os.path.dirname(os.path.abspath(final))) from e
        raise


def write_file(final, data):
    """Write `data` (str or bytes) to `final` durably."""
    with staged_file(final, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def publish_folder(tmp, final):
    """fsync `tmp` and rename it to `final`; a folder already at `final` is moved aside and removed after."""
    final = os.path.abspath(os.fspath(final))
    fsync_tree(tmp)
    old = None
    if os.path.lexists(final):
        head, name = os.path.split(final)
        old = os.path.join(head, f".{name}{OLD}{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
    os.replace(tmp, final)
    fsync(os.path.dirname(final))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(final):
    """Yield a new staging folder beside `final`; on a clean exit it is published there, on an error removed."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(os.fspath(final))), exist_ok=True)
        tmp = staging_path(final)
        os.mkdir(tmp)  # the usual permissions (umask), unlike tempfile.mkdtemp's 0700
    except OSError as e:
        raise environment_fault(e, f"creating a folder for {os.fspath(final)}") from e
    try:
        yield tmp
        publish_folder(tmp, final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_environment(e) and not isinstance(e, EnvironmentFault):
            raise environment_fault(e, f"writing {os.fspath(final)}", os.path.dirname(tmp)) from e
        raise


def remove_staging(folder):
    """Delete the staging files and folders a killed writer left in `folder` (an aside copy only if its
    replacement is in place: otherwise it is the one complete version, and is left alone)."""
    for entry in os.listdir(folder):
        if not entry.startswith("."):
            continue
        name, sep, _ = entry[1:].rpartition(PARTIAL)
        if not sep:
            name, sep, _ = entry[1:].rpartition(OLD)
            if not sep or not os.path.exists(os.path.join(folder, name)):
                continue
        path = os.path.join(folder, entry)
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)
