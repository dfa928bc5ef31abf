"""Check a config's dataset folders before the runner is built.

A wrong ``data_root`` otherwise surfaces minutes later (after the model is
built, maybe after pretrained weights are downloaded) as a bare
``FileNotFoundError`` from deep inside a dataset class, or, worse, as an empty
dataset. :func:`check_dataset_layout` looks at the dataloaders of a config and
fails at once with what is wrong, the layout that was expected and how to fix
it. It only looks at the top of each tree (a few ``scandir`` calls), so it
costs nothing on ImageNet-sized folders, and it stays silent for dataset
types it does not know and for remote (``s3://``...) roots.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from collections.abc import Iterable, Iterator, Mapping

__all__ = ['DatasetLayoutError', 'check_dataset_layout', 'dataset_problem']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff',
                    '.webp')

ADE20K_LAYOUT = """\
    {root}/
      images/training/*.jpg         annotations/training/*.png
      images/validation/*.jpg       annotations/validation/*.png
  (ADEChallengeData2016 unzipped; python tools/data/make_tiny_ade20k.py DIR writes a tiny
  synthetic one)"""

SEG_LAYOUT = """\
    {root}/
      {img}/<name>{img_suffix}
      {seg}/<name>{seg_suffix}   (one label map per image, same <name>)"""

IMAGENET_LAYOUT = """\
    {root}/
      train/<class>/*.JPEG   (one folder per class, e.g. train/n01440764/)
      val/<class>/*.JPEG
  or image lists: {root}/meta/train.txt and meta/val.txt with lines '<relative path> <label>'"""

COCO_LAYOUT = """\
    {root}/
      annotations/instances_train2017.json   annotations/instances_val2017.json
      train2017/*.jpg                        val2017/*.jpg"""


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder that does not have the layout its dataset type reads."""


def _join(root: str, path: str) -> str:
    if not path:
        return root
    return path if osp.isabs(path) or not root else osp.join(root, path)


def _has_file(folder: str, suffixes: tuple[str, ...], depth: int = 0) -> bool:
    """Whether ``folder`` (or a subfolder up to ``depth`` deep) holds such a file."""
    try:
        with os.scandir(folder) as entries:
            subfolders = []
            for entry in entries:
                if entry.is_file() and entry.name.lower().endswith(suffixes):
                    return True
                if depth and entry.is_dir():
                    subfolders.append(entry.path)
    except OSError:
        return False
    return any(_has_file(sub, suffixes, depth - 1) for sub in sorted(subfolders)[:3])


def _check_segmentation(ds: Mapping, root: str) -> str | None:
    prefix = ds.get('data_prefix') or {}
    img = _join(root, prefix.get('img_path', ''))
    seg = _join(root, prefix.get('seg_map_path', ''))
    img_suffix = ds.get('img_suffix', '.jpg')
    seg_suffix = ds.get('seg_map_suffix', '.png')
    if ds.get('type') == 'ADE20KDataset':
        layout = ADE20K_LAYOUT.format(root=root or '.')
    else:
        layout = SEG_LAYOUT.format(root=root or '.', img=prefix.get('img_path', ''),
                                   seg=prefix.get('seg_map_path', ''),
                                   img_suffix=img_suffix, seg_suffix=seg_suffix)
    ann_file = ds.get('ann_file')
    if ann_file and not osp.isfile(_join(root, ann_file)):
        return f'split file {_join(root, ann_file)!r} does not exist'
    for what, folder, suffix in (('images', img, img_suffix),
                                 ('label maps', seg, seg_suffix)):
        if not osp.isdir(folder):
            return f'{what} folder {folder!r} does not exist. Expected layout:\n{layout}'
        if not _has_file(folder, (suffix.lower(),), depth=1):
            return (f'{what} folder {folder!r} has no *{suffix} files. Expected '
                    f'layout:\n{layout}')
    return None


def _check_classification(ds: Mapping, root: str) -> str | None:
    layout = IMAGENET_LAYOUT.format(root=root or '.')
    ann_file = ds.get('ann_file') or ''
    split = ds.get('split') or ''
    prefix = ds.get('data_prefix') or split
    if isinstance(prefix, Mapping):
        prefix = prefix.get('img_path', '')
    if not ann_file and split and osp.isfile(osp.join(root, 'meta', f'{split}.txt')):
        ann_file = osp.join('meta', f'{split}.txt')
    folder = _join(root, prefix)
    if not osp.isdir(folder):
        return f'image folder {folder!r} does not exist. Expected layout:\n{layout}'
    if ann_file:
        if not osp.isfile(_join(root, ann_file)):
            return f'image list {_join(root, ann_file)!r} does not exist. Expected ' \
                   f'layout:\n{layout}'
        return None
    classes = [e for e in os.scandir(folder) if e.is_dir()]
    if not classes:
        loose = _has_file(folder, IMAGE_EXTENSIONS)
        return (f'image folder {folder!r} has no class subfolders'
                + (' (its images lie directly in it)' if loose else '')
                + f'. Expected layout:\n{layout}')
    if not any(_has_file(c.path, IMAGE_EXTENSIONS, depth=1) for c in sorted(
            classes, key=lambda e: e.name)[:3]):
        return (f'class folders under {folder!r} (e.g. {classes[0].name!r}) hold no '
                f'images with extensions {IMAGE_EXTENSIONS}. Expected layout:\n{layout}')
    return None


def _check_coco(ds: Mapping, root: str) -> str | None:
    layout = COCO_LAYOUT.format(root=root or '.')
    ann_file = _join(root, ds.get('ann_file', ''))
    if not osp.isfile(ann_file):
        return f'annotation file {ann_file!r} does not exist. Expected layout:\n{layout}'
    prefix = ds.get('data_prefix') or {}
    img = _join(root, prefix.get('img', '') if isinstance(prefix, Mapping) else prefix)
    if not osp.isdir(img):
        return f'image folder {img!r} does not exist. Expected layout:\n{layout}'
    try:
        with open(ann_file) as f:
            content = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f'annotation file {ann_file!r} is not valid JSON ({err}); re-download it'
    missing = [k for k in ('images', 'annotations', 'categories')
               if not isinstance(content, dict) or k not in content]
    if missing:
        return (f'annotation file {ann_file!r} is not in COCO format: it lacks '
                f'{missing}. Expected a COCO instances json with images, annotations and '
                'categories')
    return None


_CLASSIFICATION_TYPES = {'ImageNet', 'ImageNet21k', 'CustomDataset'}


def dataset_problem(ds: Mapping) -> str | None:
    """What is wrong with one (non-wrapper) dataset config, or ``None``."""
    root = ds.get('data_root') or ''
    if '://' in root:
        return None
    ds_type = str(ds.get('type', ''))
    prefix = ds.get('data_prefix')
    name = f'{ds_type} (data_root={root!r})'
    if isinstance(prefix, Mapping) and 'seg_map_path' in prefix:
        problem = _check_segmentation(ds, root)
    elif ds_type.split('.')[-1] in _CLASSIFICATION_TYPES:
        problem = _check_classification(ds, root)
    elif 'Coco' in ds_type or str(ds.get('ann_file', '')).endswith('.json'):
        problem = _check_coco(ds, root)
    else:
        return None
    return f'{name}: {problem}' if problem else None


def _leaf_datasets(ds) -> Iterator[Mapping]:
    """Datasets inside wrappers (Repeat/ClassBalanced/Concat/MultiImageMix)."""
    if not isinstance(ds, Mapping):
        return
    if isinstance(ds.get('datasets'), (list, tuple)):
        for inner in ds['datasets']:
            yield from _leaf_datasets(inner)
    elif isinstance(ds.get('dataset'), Mapping):
        yield from _leaf_datasets(ds['dataset'])
    else:
        yield ds


def check_dataset_layout(cfg: Mapping,
                         dataloaders: Iterable[str] = ('train_dataloader', 'val_dataloader',
                                                       'test_dataloader')) -> None:
    """Raise :class:`DatasetLayoutError` if a dataset folder of ``cfg`` is wrong.

    Args:
        cfg: an mmengine ``Config`` (or dict).
        dataloaders: which dataloader entries to check (``tools/train.py``:
            train and val; ``tools/test.py``: test).
    """
    problems: dict[str, list[str]] = {}
    for key in dataloaders:
        loader = cfg.get(key)
        if not isinstance(loader, Mapping):
            continue
        for ds in _leaf_datasets(loader.get('dataset')):
            problem = dataset_problem(ds)
            if problem:
                problems.setdefault(problem, []).append(key)
    if problems:
        raise DatasetLayoutError('\n'.join(
            f"wrong dataset folder for {', '.join(keys)}: {problem}"
            for problem, keys in problems.items()))
