"""Packaging hook: the package carries its configs, tools and model index.

Like mmseg, mmdet and mmpretrain, an installed ``vvt_mm`` holds ``configs/``,
``tools/`` and ``model-index.yml`` (with the metafiles under ``configs/``) in
``vvt_mm/.mim/``, where mim and :mod:`vvt_mm.model_zoo` find them. They are
copied into the build at build time, so the repository keeps one copy; an
editable install links them instead, so that edits show without a reinstall.
Everything else lives in ``setup.cfg``.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
MIM_ITEMS = ('configs', 'tools', 'model-index.yml')


class BuildPyWithMim(build_py):
    """``build_py`` that also puts :data:`MIM_ITEMS` in ``vvt_mm/.mim``."""

    def run(self) -> None:
        super().run()
        if getattr(self, 'editable_mode', False):
            link_mim(ROOT / 'vvt_mm' / '.mim')
        else:
            copy_mim(Path(self.build_lib) / 'vvt_mm' / '.mim')


def copy_mim(dst: Path) -> None:
    """Fresh copies (no bytecode), so a reused ``build/`` holds no stale config."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in MIM_ITEMS:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name,
                            ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst / name)


def link_mim(dst: Path) -> None:
    """Relative links into the source tree; where links fail, nothing is needed
    (:mod:`vvt_mm.model_zoo` falls back to the source tree)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in MIM_ITEMS:
        link = dst / name
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        try:
            link.symlink_to(Path('..', '..', name))
        except OSError as err:
            warnings.warn(f'could not link {link} ({err}); the source tree is used instead',
                          stacklevel=1)


setup(cmdclass={'build_py': BuildPyWithMim})
