"""Errors while loading a sample name the sample, its files and the transform that failed.

A corrupt file in a dataset of 20k images otherwise ends training with
``PIL.UnidentifiedImageError: cannot identify image file <_io.BytesIO object
at 0x7f...>`` (mmseg's annotation loader), ``'NoneType' object has no
attribute 'squeeze'`` (cv2 on a broken PNG) or the same wrapped in "Caught ...
in DataLoader worker process 1" -- nothing says which file to fix.

:func:`enable_sample_error_context` makes every dataloader the mmengine
``Runner`` builds run its dataset's pipeline through :class:`SamplePipeline`,
which re-raises any error of a transform as :class:`SampleLoadError`:
``sample 7 of ADE20KDataset (img_path='.../ADE_train_00000007.jpg',
seg_map_path='...png'): LoadAnnotations failed: UnidentifiedImageError: ...``.
The wrapper is an attribute of the dataset object, so DataLoader workers get
it whether they are forked or spawned. ``tools/train.py`` and
``tools/test.py`` enable it; :class:`SampleErrorHook` brings it to the
libraries' stock tools through ``custom_hooks``.
"""
from __future__ import annotations

from typing import Any

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

__all__ = ['SampleErrorHook', 'SampleLoadError', 'SamplePipeline',
           'enable_sample_error_context', 'name_sample_errors']


class SampleLoadError(RuntimeError):
    """A sample could not be loaded; the message names its files."""

    @property
    def summary(self) -> str:
        """The message without the worker traceback a DataLoader adds to it."""
        text = str(self).rstrip()
        marker = f'{type(self).__name__}: '
        if text.startswith('Caught ') and marker in text:
            worker = text.split('\n', 1)[0].split(' in ', 1)[-1].rstrip('.')
            return f'{text.rsplit(marker, 1)[1]} (in {worker})'
        return text


def _sample_files(data: Any) -> str:
    if not isinstance(data, dict):
        return ''
    named = [f'{k}={v!r}' for k, v in data.items() if k.endswith('_path') and isinstance(v, str)]
    return f' ({", ".join(named)})' if named else ''


class SamplePipeline:
    """A dataset pipeline whose errors name the sample (see the module docstring).

    Args:
        pipeline: the dataset's pipeline (mmengine ``Compose`` or any callable).
        dataset_name: shown in errors, e.g. ``'ADE20KDataset'``.
    """

    def __init__(self, pipeline, dataset_name: str) -> None:
        self.pipeline = pipeline
        self.dataset_name = dataset_name

    def __getattr__(self, name: str):
        # Code that inspects dataset.pipeline.transforms keeps working; the
        # guard keeps unpickling (in spawned workers) from recursing.
        if name in ('pipeline', 'dataset_name') or name.startswith('__'):
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def __call__(self, data: dict) -> Any:
        files = _sample_files(data)
        index = data.get('sample_idx', '?') if isinstance(data, dict) else '?'
        where = f'sample {index} of {self.dataset_name}{files}'
        from mmengine.dataset import Compose

        if type(self.pipeline) is not Compose:
            try:
                return self.pipeline(data)
            except SampleLoadError:
                raise
            except Exception as err:
                raise SampleLoadError(f'{where}: {type(err).__name__}: {err}') from err
        # mmengine's Compose.__call__, with the failing transform named.
        for transform in self.pipeline.transforms:
            try:
                data = transform(data)
            except SampleLoadError:
                raise
            except Exception as err:
                raise SampleLoadError(f'{where}: {type(transform).__name__} failed: '
                                      f'{type(err).__name__}: {err}') from err
            if data is None:
                return None
        return data

    def __repr__(self) -> str:
        return repr(self.pipeline)


def name_sample_errors(dataset: Any) -> None:
    """Wrap the pipelines of ``dataset`` and of the datasets it wraps (in place)."""
    pending, seen = [dataset], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        pipeline = getattr(current, 'pipeline', None)
        if callable(pipeline) and not isinstance(pipeline, SamplePipeline):
            current.pipeline = SamplePipeline(pipeline, type(current).__name__)
        pending.append(getattr(current, 'dataset', None))
        pending.extend(getattr(current, 'datasets', None) or [])


def enable_sample_error_context() -> None:
    """Make the ``Runner``'s dataloaders name the sample on a loading error. Idempotent."""
    from mmengine.runner import Runner

    original = Runner.build_dataloader
    if getattr(original, '_vvt_mm_named', False):
        return

    def build_dataloader(*args, **kwargs):
        loader = original(*args, **kwargs)
        name_sample_errors(getattr(loader, 'dataset', None))
        return loader

    build_dataloader._vvt_mm_named = True
    Runner.build_dataloader = staticmethod(build_dataloader)


@HOOKS.register_module()
class SampleErrorHook(Hook):
    """Enable :func:`enable_sample_error_context` from a config (hooks are built
    before the ``Runner`` builds its dataloaders)."""

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        enable_sample_error_context()
