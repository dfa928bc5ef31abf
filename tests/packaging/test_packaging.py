"""An installed vvt_mm works like an OpenMMLab library.

* a wheel built from a clean checkout carries ``vvt_mm/.mim``: the configs,
  ``model-index.yml`` and the metafiles, every ``Config:`` of which it holds;
  installed, it finds that index, and ``import vvt_mm`` does not import mmpretrain;
* the backbones are exported at the top level;
* ``mmpretrain.list_models`` lists the eight classifiers (registration is
  idempotent) and ``get_model(name, pretrained=...)`` loads an official-layout
  checkpoint in full, while a file of another arch or model fails loudly.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

import vvt_mm
from vvt_mm.checkpoint import CheckpointError
from vvt_mm.model_zoo import CLASSIFIER_METAFILE, mim_root, register_classifiers

ROOT = Path(__file__).resolve().parents[2]
CLASSIFIERS = sorted(f'vvt-{arch}_3rdparty_in1k{size}'
                     for arch in ('tiny', 'small', 'medium', 'large') for size in ('', '-384px'))


def _official_helpers():
    import vvt_mm.testing
    return vvt_mm.testing


def _clean_checkout(dst: Path) -> Path:
    """The files a fresh clone would hold, from the working tree (uncommitted edits
    included): tracked and untracked-but-not-ignored, no build outputs."""
    listed = subprocess.run(
        ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
        cwd=ROOT, capture_output=True, check=True).stdout.decode().split('\0')
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    if shutil.which('git') is None or not (ROOT / '.git').exists():
        pytest.skip('needs a git checkout')
    src = _clean_checkout(tmp_path_factory.mktemp('checkout'))
    out = tmp_path_factory.mktemp('wheel')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', str(src), '--no-deps',
                    '--no-build-isolation', '--no-index', '-q', '-w', str(out)],
                   check=True)
    (path, ) = out.glob('vvt_mm-*.whl')
    return path


def test_wheel_ships_configs_model_index_and_metafiles(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    mim = 'vvt_mm/.mim/'
    configs = {p.name for p in (ROOT / 'configs').glob('*.py')}
    assert configs and {f'{mim}configs/{c}' for c in configs} <= names
    assert f'{mim}model-index.yml' in names
    assert f'{mim}tools/train.py' in names
    assert not [n for n in names if '__pycache__' in n or n.endswith('.pyc')]
    with zipfile.ZipFile(wheel) as archive:
        index = yaml.safe_load(archive.read(f'{mim}model-index.yml'))
        assert index['Import'], 'the model index imports no metafile'
        for metafile in index['Import']:
            assert f'{mim}{metafile}' in names, metafile
            models = yaml.safe_load(archive.read(f'{mim}{metafile}'))['Models']
            missing = [m['Config'] for m in models if f'{mim}{m["Config"]}' not in names]
            assert not missing, f'{metafile} names configs the wheel lacks: {missing}'


def test_installed_wheel_registers_from_its_mim_without_importing_mmpretrain(wheel, tmp_path):
    site = tmp_path / 'site'
    with zipfile.ZipFile(wheel) as archive:  # a pure-Python wheel installs by unzipping
        archive.extractall(site)
    script = (
        'import sys, vvt_mm\n'
        'from vvt_mm.model_zoo import mim_root\n'
        'assert "mmpretrain" not in sys.modules, "import vvt_mm imported mmpretrain"\n'
        'print(vvt_mm.__file__)\n'
        'print(mim_root())\n'
        'from mmpretrain import list_models\n'
        'print(",".join(list_models("*vvt*")))\n')
    run = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                         env={**os.environ, 'PYTHONPATH': str(site)}, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    package, root, models = run.stdout.split()[-3:]
    assert Path(package).parent == site / 'vvt_mm'
    assert Path(root) == site / 'vvt_mm' / '.mim'
    assert models.split(',') == CLASSIFIERS


def test_backbones_are_exported_at_the_top_level():
    from vvt_mm.models import backbones
    for name in ('VVT', 'LocalViT', 'LocalViTPVT', 'ViTAEv2VSA', 'LVT'):
        assert name in vvt_mm.__all__
        assert getattr(vvt_mm, name) is getattr(backbones, name)


def test_list_models_lists_the_classifiers_and_registering_again_is_a_no_op():
    from mmpretrain import list_models
    from mmpretrain.apis import ModelHub
    assert list_models('*vvt*') == CLASSIFIERS
    assert register_classifiers() and register_classifiers()
    assert list_models('*vvt*') == CLASSIFIERS
    assert mim_root() is not None and (mim_root() / CLASSIFIER_METAFILE).is_file()
    tiny = ModelHub.get('vvt-tiny_3rdparty_in1k')
    assert Path(tiny.config.filename).name == 'vvt_t_in1k.py'
    assert tiny.weights.startswith('https://1drv.ms/')
    assert ModelHub.get('vvt-tiny_3rdparty_in1k-384px').weights is None  # none released


needs_filter = pytest.mark.skipif(
    not hasattr(vvt_mm.VVT, '_checkpoint_filter'),
    reason='needs StagedBackbone._checkpoint_filter (mmpretrain ImageClassifier load hook) '
    'calling vvt_mm.checkpoint.classifier_filter.filter_classifier_checkpoint')


@pytest.fixture(scope='module')
def official_tiny(tmp_path_factory):
    """An official-layout VVT-T file (``{'model': ...}``) and the modules it came from."""
    path = tmp_path_factory.mktemp('official') / 'vvt_tiny.pth'
    backbone, head = _official_helpers().official_checkpoint(path)
    return path, backbone.eval(), head.eval()


@needs_filter
@pytest.mark.parametrize('how', ['path', 'url_mapping'])
def test_get_model_loads_an_official_checkpoint_in_full(official_tiny, how, tmp_path):
    from mmpretrain import get_model
    path, backbone, head = official_tiny
    if how == 'path':
        model = get_model('vvt-tiny_3rdparty_in1k', pretrained=str(path))
    else:  # pretrained=True resolves the metafile's URL, mapped to the local file
        model = get_model('vvt-tiny_3rdparty_in1k', pretrained=True,
                          url_mapping=(r'https://1drv\.ms/.*', str(path)))
    expected = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    expected.update({'head.fc.weight': head.weight, 'head.fc.bias': head.bias})
    loaded = model.state_dict()
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), head(backbone(x)[-1].mean((2, 3))),
                              rtol=1e-5, atol=1e-6)
    # The model's own layout still loads (the hook leaves it as it is).
    ours = tmp_path / 'vvt_tiny_in1k-mm.pth'
    torch.save({'state_dict': loaded}, ours)
    again = get_model('vvt-tiny_3rdparty_in1k', pretrained=str(ours))
    assert all(torch.equal(again.state_dict()[k], v) for k, v in expected.items())


@needs_filter
@pytest.mark.parametrize('wrong', ['other_arch', 'other_model', 'backbone_only'])
def test_get_model_refuses_a_file_that_does_not_fit(official_tiny, wrong, tmp_path):
    from mmpretrain import get_model
    path, backbone, _ = official_tiny
    name, match = 'vvt-tiny_3rdparty_in1k', 'fills only'
    if wrong == 'other_arch':  # VVT-T weights, VVT-S model: one depth less, no shape differs
        name, match = 'vvt-small_3rdparty_in1k', 'another VVT arch'
    elif wrong == 'other_model':
        path = tmp_path / 'resnet.pth'
        torch.save({'state_dict': {'backbone.conv1.weight': torch.zeros(64, 3, 7, 7),
                                   'head.fc.weight': torch.zeros(1000, 512)}}, path)
    else:
        path = tmp_path / 'vvt_tiny_backbone.pth'
        torch.save({'state_dict': backbone.state_dict()}, path)
    with pytest.raises(CheckpointError, match=match):
        get_model(name, pretrained=str(path))
