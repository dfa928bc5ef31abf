"""Write checkpoints atomically: a kill while saving never leaves a truncated file.

mmengine's ``save_checkpoint`` opens ``iter_N.pth`` for writing and streams the
bytes into it; a job killed mid-write (pre-emption, OOM killer, wall-clock
limit on a cluster) leaves a truncated file under the final name. We write to a
hidden temporary file in the same folder, ``fsync`` it, then ``os.replace`` it
onto the final name -- a rename within one filesystem is atomic on POSIX and
Windows, so readers see either the old file or the complete new one.

:func:`enable_atomic_checkpoints` swaps mmengine's ``save_checkpoint`` (the
name the ``Runner`` and ``CheckpointHook`` call) for :func:`atomic_save_checkpoint`;
remote backends (``s3://``, ``pavi://``, ...) keep mmengine's writer.
"""
from __future__ import annotations

import glob
import io
import os
import os.path as osp
import socket
import uuid
from collections.abc import Callable

import torch

__all__ = ['atomic_save', 'atomic_save_checkpoint', 'enable_atomic_checkpoints']

_TMP_MARK = '.tmp-'
_original_save: Callable | None = None


def _tmp_name(path: str) -> str:
    # Host and pid in the name let a later save tell a dead writer's leftover
    # from a live concurrent writer's file (work dirs are often on shared NFS).
    folder, name = osp.split(path)
    return osp.join(folder, f'.{name}{_TMP_MARK}{socket.gethostname()}-{os.getpid()}-'
                    f'{uuid.uuid4().hex[:8]}')


def _remove_stale_tmp_files(path: str) -> None:
    """Delete temporaries of ``path`` left by killed writers on this host."""
    folder, name = osp.split(path)
    host = socket.gethostname()
    for tmp in glob.glob(osp.join(glob.escape(folder), f'.{glob.escape(name)}{_TMP_MARK}*')):
        try:
            tmp_host, pid = osp.basename(tmp).split(_TMP_MARK, 1)[1].rsplit('-', 2)[:2]
            if tmp_host != host:
                continue
            os.kill(int(pid), 0)  # raises if no such process
        except ProcessLookupError:
            try:
                os.remove(tmp)
            except OSError:
                pass
        except (ValueError, PermissionError, OSError):
            continue


def _fsync_dir(folder: str) -> None:
    """Persist the rename itself (best effort: not every OS/FS allows it)."""
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


def atomic_save(obj, path: str, writer: Callable[[object, io.BufferedWriter], None] | None
                = None) -> None:
    """``torch.save(obj, path)`` that is all-or-nothing under the final name.

    Args:
        obj: what to save.
        path: final local file path (its folder is created if needed).
        writer: ``writer(obj, file)`` serialiser; ``torch.save`` by default.
    """
    writer = writer or torch.save
    path = osp.abspath(osp.expanduser(path))
    folder = osp.dirname(path)
    os.makedirs(folder, exist_ok=True)
    _remove_stale_tmp_files(path)
    tmp = _tmp_name(path)
    try:
        # 'xb' honours the umask (mkstemp would make checkpoints owner-only).
        with open(tmp, 'xb') as f:
            writer(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def atomic_save_checkpoint(checkpoint: dict, filename: str, file_client_args: dict | None
                           = None, backend_args: dict | None = None) -> None:
    """Drop-in for ``mmengine.runner.checkpoint.save_checkpoint``."""
    from mmengine.fileio import LocalBackend, get_file_backend

    local = (file_client_args is None and '://' not in str(filename)
             and isinstance(get_file_backend(filename, backend_args=backend_args),
                            LocalBackend))
    if local:
        atomic_save(checkpoint, filename)
        return
    assert _original_save is not None
    _original_save(checkpoint, filename, file_client_args=file_client_args,
                   backend_args=backend_args)


def enable_atomic_checkpoints() -> None:
    """Make every mmengine checkpoint save atomic. Idempotent.

    mmengine binds ``save_checkpoint`` by name in three places (the
    ``checkpoint`` module, the ``mmengine.runner`` package, which the
    ``CheckpointHook`` imports from, and ``runner.py``); all three are replaced.
    """
    global _original_save
    import mmengine.runner as mm_runner_pkg
    from mmengine.runner import checkpoint as mm_checkpoint
    from mmengine.runner import runner as mm_runner

    if _original_save is None and mm_checkpoint.save_checkpoint is not atomic_save_checkpoint:
        _original_save = mm_checkpoint.save_checkpoint
    for module in (mm_checkpoint, mm_runner_pkg, mm_runner):
        module.save_checkpoint = atomic_save_checkpoint
