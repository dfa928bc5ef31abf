"""Official-layout VVT weights for tests (no download), and tool scripts by path.

The inverse key mapping here is written from the official layout
(``classification/vvt.py`` of OpenNLPLab/Vicinity-Vision-Transformer),
independently of :mod:`vvt_mm.checkpoint.vvt_keys`, so a test of the
converter compares two separate readings of the same layout.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

# The source checkout (tools/ is not part of the installed package's import path).
ROOT = Path(__file__).resolve().parents[2]


def load_tool(relpath: str):
    """Import a script under tools/ as a module (tools/ is not a package)."""
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Our key -> the official key, written from the official layout (REFERENCE.md),
# independently of vvt_mm.checkpoint's forward rules.
_TO_OFFICIAL = [
    (r'^stages\.(\d)\.patch_embed\.', 'patch_embed{s}.'),
    (r'^stages\.(\d)\.blocks\.(\d+)\.attn\.fpc_gate\.', 'block{s}.{j}.attn.se_fc.'),
    (r'^stages\.(\d)\.blocks\.(\d+)\.ffn\.dwconv\.', 'block{s}.{j}.mlp.dwconv.dwconv.'),
    (r'^stages\.(\d)\.blocks\.(\d+)\.ffn\.', 'block{s}.{j}.mlp.'),
    (r'^stages\.(\d)\.blocks\.(\d+)\.', 'block{s}.{j}.'),
    (r'^stages\.(\d)\.norm\.', 'norm{s}.'),
]


def to_official(backbone_state: dict) -> dict:
    out = {}
    for key, value in backbone_state.items():
        for pattern, template in _TO_OFFICIAL:
            m = re.match(pattern, key)
            if m:
                j = m.group(2) if m.lastindex and m.lastindex > 1 else ''
                out[template.format(s=int(m.group(1)) + 1, j=j) + key[m.end():]] = value
                break
        else:
            raise KeyError(key)
    return out


def official_checkpoint(path: Path, num_classes: int = 1000, hot_class: int | None = None,
                        seed: int = 0, arch: str = 'tiny'):
    """Save ``{'model': official sd}`` of a random VVT + linear head; return the parts."""
    from vvt_mm.models.backbones import VVT
    torch.manual_seed(seed)
    backbone = VVT(arch=arch, drop_path_rate=0.0).eval()
    backbone.init_weights()
    head = torch.nn.Linear(512, num_classes)
    with torch.no_grad():
        head.weight.normal_(0, 0.02)
        head.bias.zero_()
        if hot_class is not None:
            head.bias[hot_class] = 100.0
    state = to_official(backbone.state_dict())
    assert any(k.startswith('block1.0.attn.se_fc.') for k in state)
    state['head.weight'] = head.weight.detach().clone()
    state['head.bias'] = head.bias.detach().clone()
    torch.save({'model': state}, path)
    return backbone, head
