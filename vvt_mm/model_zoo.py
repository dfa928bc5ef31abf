"""The model zoo index (``model-index.yml`` and its metafiles) and mmpretrain's view of it.

The index sits in ``vvt_mm/.mim`` of an installed wheel (``setup.py`` copies
it there) and at the top of a source checkout. Importing ``vvt_mm`` registers
the ImageNet-1k classifiers with mmpretrain's ``ModelHub``, so that
``mmpretrain.list_models('*vvt*')`` and ``mmpretrain.get_model(name)`` know
them. The segmentors' metafile is left to mim: mmpretrain cannot build them.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

CLASSIFIER_METAFILE = 'configs/vvt_in1k_metafile.yml'
_HUB_MODULE = 'mmpretrain.apis.model'


def mim_root() -> Path | None:
    """Folder with ``model-index.yml`` and ``configs/``: the wheel's ``.mim``, else
    the source tree; ``None`` for an install built without them."""
    package = Path(__file__).resolve().parent
    for root in (package / '.mim', package.parent):
        if (root / 'model-index.yml').is_file() and (root / CLASSIFIER_METAFILE).is_file():
            return root
    return None


def classifier_names(root: Path) -> list[str]:
    """Model names of the classifier metafile, as mmpretrain keys them (lower case)."""
    import yaml
    with open(root / CLASSIFIER_METAFILE) as f:
        return [model['Name'].lower() for model in yaml.safe_load(f)['Models']]


def register_classifiers(model_hub: type | None = None) -> bool:
    """Register the classifiers with mmpretrain's ``ModelHub``; ``False`` if none found.

    Idempotent: ``ModelHub.register_model_index`` refuses a name it already
    holds, so an index registered before (e.g. by an earlier import) is skipped.
    Config paths in the metafile are relative to the index root.
    """
    if model_hub is None:
        from mmpretrain.apis.model import ModelHub as model_hub
    root = mim_root()
    if root is None:
        return False
    if all(model_hub.has(name) for name in classifier_names(root)):
        return True
    model_hub.register_model_index(root / CLASSIFIER_METAFILE, config_prefix=root)
    return True


def _register_from(hub_module: ModuleType) -> None:
    # Runs inside mmpretrain's own import: a failure here must not break it.
    try:
        register_classifiers(hub_module.ModelHub)
    except Exception as err:
        warnings.warn(f'vvt_mm: could not register its models with mmpretrain: {err}',
                      stacklevel=2)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``callback(module)`` once module ``name`` has been executed.

    Lets ``import vvt_mm`` reach mmpretrain's ``ModelHub`` without importing
    mmpretrain (seconds, and unwanted in mmseg/mmdet runs) or requiring it.
    """

    def __init__(self, name: str, callback: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.callback = callback

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader = getattr(spec, 'loader', None)
        if loader is None or not hasattr(loader, 'exec_module'):
            return spec
        exec_module = loader.exec_module

        def exec_then_call(module: ModuleType) -> None:
            exec_module(module)
            self.callback(module)

        loader.exec_module = exec_then_call
        return spec


def register_with_mmpretrain() -> None:
    """Register the classifiers now if mmpretrain's hub is loaded, else when it loads.

    Does nothing, and imports nothing, where mmpretrain is not installed.
    """
    if _HUB_MODULE in sys.modules:
        _register_from(sys.modules[_HUB_MODULE])
    elif not any(isinstance(f, _AfterImport) and f.name == _HUB_MODULE for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(_HUB_MODULE, _register_from))
