"""vvt_mm.runtime.allocator: re-allocated CPU tensors reuse mapped pages instead of
faulting in fresh ones; the user's own malloc choices and the opt-out are respected.

Each case runs in a fresh interpreter: malloc settings are process-wide.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vvt_mm.runtime.allocator import OPT_OUT

# Allocates, fills and frees a 64 MiB tensor as iterations of a loop do, and
# counts the minor page faults of the last REPEATS iterations (16384 per block
# of 4 KiB pages if none are reused). The first iterations fault in any case
# (the freed block is not yet where the next aligned request fits), and the
# kernel may reclaim idle kept pages now and then, so a kept run is allowed
# about one block's worth of faults.
PROBE = """
import json, resource, sys, torch
from vvt_mm.runtime.allocator import keep_freed_memory
said = keep_freed_memory() if sys.argv[1] == 'keep' else None
numel = 16 << 20
for _ in range(3):
    torch.empty(numel).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(int(sys.argv[2])):
    torch.empty(numel).fill_(2.0)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps(dict(said=said, faults=faults)))
"""
REPEATS = 8


def clean_env(**env: str) -> dict[str, str]:
    """This process's environment without malloc choices, plus ``env``."""
    return {**{k: v for k, v in os.environ.items()
               if not k.startswith('MALLOC_') and k not in ('GLIBC_TUNABLES', OPT_OUT)}, **env}


def probe(mode: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, '-c', PROBE, mode, str(REPEATS)], env=clean_env(**env),
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def glibc():
    if not hasattr(__import__('ctypes').CDLL(None), 'gnu_get_libc_version'):
        pytest.skip('malloc tuning applies to glibc only')


@pytest.fixture(scope='module')
def baseline(glibc) -> dict[str, dict]:
    return dict(default=probe('default'), kept=probe('keep'))


def test_kept_memory_is_reused_without_page_faults(baseline):
    # Counted in faults, not pages: where transparent huge pages are always on,
    # a fault maps 2 MiB, so only the ratio between the two runs is fixed.
    default, kept = baseline['default'], baseline['kept']
    assert default['said'] is None
    assert default['faults'] >= REPEATS  # glibc maps every block afresh
    assert 'M_MMAP_MAX=0' in kept['said'] and OPT_OUT in kept['said']
    # At most about one block's faults in REPEATS (see PROBE).
    assert kept['faults'] < 0.25 * default['faults']


@pytest.mark.parametrize('env', [{OPT_OUT: '0'}, {'MALLOC_ARENA_MAX': '2'},
                                 {'GLIBC_TUNABLES': 'glibc.malloc.trim_threshold=1'}],
                         ids=['opted-out', 'MALLOC_-variable', 'glibc-tunable'])
def test_the_users_own_malloc_choice_is_left_alone(baseline, env):
    result = probe('keep', **env)
    assert result['said'] is None
    assert result['faults'] > 0.5 * baseline['default']['faults']


def test_a_cpu_launch_keeps_freed_memory_and_logs_it(glibc):
    script = ('from mmengine.config import Config\n'
              'from vvt_mm.runtime import prepare_launch\n'
              'from vvt_mm.runtime.allocator import keeping_freed_memory\n'
              "prepare_launch(Config(dict(model=dict())), 'none')\n"
              "print('kept:', keeping_freed_memory())\n")
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                         env=clean_env(CUDA_VISIBLE_DEVICES=''), timeout=120, check=True)
    text = out.stdout + out.stderr
    assert 'kept: True' in text
    assert 'no CUDA device: glibc malloc keeps freed memory' in text
