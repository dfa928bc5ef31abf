"""The README's Python snippets run as written."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(section: str) -> list[str]:
    text = (ROOT / 'README.md').read_text()
    body = text.split(f'## {section}\n', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```python\n(.*?)```', body, re.S)


def test_using_vvt_snippet_runs_in_a_fresh_interpreter(tmp_path):
    (snippet,) = python_blocks('Using VVT')
    proc = subprocess.run([sys.executable, '-c', snippet], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '(1, 96, 128, 128)' in proc.stdout and '(1, 512, 16, 16)' in proc.stdout


def test_installed_package_snippet_lists_and_loads_the_classifiers(tmp_path):
    """The mmpretrain model-zoo snippet, with an official-layout VVT-S file in place."""
    from vvt_mm.testing import official_checkpoint
    (snippet,) = [b for b in python_blocks('Use VVT in your own config') if 'get_model' in b]
    (tmp_path / 'pretrained').mkdir()
    official_checkpoint(tmp_path / 'pretrained' / 'vvt_small.pth', arch='small')
    proc = subprocess.run([sys.executable, '-c', snippet], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'vvt-small_3rdparty_in1k' in proc.stdout and 'vvt-tiny_3rdparty_in1k' in proc.stdout
    assert 'official VVT checkpoint converted on load' in proc.stdout + proc.stderr
