"""Training that survives faults: a dead rank, SIGTERM, a NaN loss, a corrupt image; and
the same job on two "nodes" and on Slurm.

Every run trains configs/upernet_vvt_t_ade20k.py with a 4-stage VVT of 16-128
channels (conftest's ``one_block_upernet_text``: the config's hooks, pipeline and
schedule otherwise) and
conftest's tiny options, lr 1e-3 so the losses move, no drop path or dropout
(mmengine does not checkpoint the torch RNG, so their masks after a resume are
other draws), for 6 iterations on 2 gloo processes, checkpoint every 2, seed 0;
each is compared with one uninterrupted ``tools/dist_train.sh CONFIG 2`` run:

* killed: rank 1 is SIGKILLed after iteration 3 while rank 0 waits for it in
  iteration 4: every process is gone within 60 s, the launcher fails and names
  rank 1, rank 0 says it lost rank 1; ``--resume`` continues from ``iter_2.pth``
  with the reference's losses for iterations 3-6;
* terminated: SIGTERM to the launcher (as a scheduler's time limit) after
  iteration 3: ``SaveOnSignalHook`` writes ``iter_3.pth``, the workers exit
  without a traceback; ``--resume`` gives the reference's iterations 4-6;
* non-finite: ``decode.loss_ce`` is NaN on rank 1 in iteration 4 (a checkpoint
  iteration): both ranks stop there with one message naming the iteration and
  the term, ``iter_2.pth`` stays the last checkpoint (resuming from it is the
  killed run's case; tests/engine/test_non_finite_loss_hook.py resumes too);
* corrupt image: ``tools/train.py`` with 2 DataLoader workers stops with one
  ``error:`` line naming the file;
* two nodes: ``NNODES=2 NODE_RANK=0/1 ... dist_train.sh CONFIG 1`` twice gives the
  reference's losses with checkpoints only on node 0, and ``dist_test.sh`` on two
  nodes the same mIoU as on one;
* Slurm: ``tools/slurm_train.sh`` with a stand-in ``srun`` (one task per rank,
  ``SLURM_*`` set as srun sets them) gives the reference's losses.

The scenarios run side by side (a thread drives each one's processes) so the
module fits a 2-core machine; each test waits for its own scenario.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mmengine.config import Config

from vvt_mm.testing import free_port, logged_scalars, run_dirs

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ENTRY = ROOT / 'configs' / 'upernet_vvt_t_ade20k.py'
ITERS, INTERVAL, FAULT_AFTER = 6, 2, 3
TIMEOUT = 600

pytestmark = pytest.mark.slow


@dataclass
class Scenario:
    """What a scenario's processes did: exit codes, timings, logs, work dirs."""
    work_dir: Path
    logs: dict[str, str] = field(default_factory=dict)
    returncodes: dict[str, int] = field(default_factory=dict)
    exit_s: float | None = None
    pids: dict[str, int] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def env(**extra: str) -> dict:
    # One thread per process: deterministic reductions, no oversubscription of
    # the 2 cores by the processes of the concurrent scenarios.
    base = {k: v for k, v in os.environ.items() if k not in ('NNODES', 'NODE_RANK', 'GPUS')}
    return dict(base, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1', PYTHON=sys.executable,
                PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get('PYTHONPATH', '')]),
                **extra)


def launch(cmd: list[str], log: Path, **extra_env: str) -> subprocess.Popen:
    # Output to a file: a full pipe nobody reads would stall the launcher.
    with open(log, 'w') as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env(**extra_env), stdout=out,
                                stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path, name: str, scenario: Scenario,
           timeout: float = TIMEOUT) -> int:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    scenario.returncodes[name] = proc.returncode
    scenario.logs[name] = log.read_text()
    return proc.returncode


def run(cmd: list[str], log: Path, name: str, scenario: Scenario, **extra_env: str) -> int:
    return finish(launch(cmd, log, **extra_env), log, name, scenario)


def dist_train(config: Path, gpus: int, work_dir: Path, options: list[str], *extra: str):
    return ['bash', 'tools/dist_train.sh', str(config), str(gpus), '--work-dir', str(work_dir),
            *extra, '--cfg-options', *options]


@functools.cache
def entry_hooks() -> tuple[dict, ...]:
    """The entry config's custom hooks (parsed once: Config.fromfile is not thread-safe)."""
    return tuple(dict(h) for h in Config.fromfile(str(ENTRY)).custom_hooks)


def tiny(tmp: Path) -> Path:
    """The module's config: ``one_block_upernet_text``, written by ``scenarios``."""
    return tmp / 'tiny.py'


def fault_config(tmp: Path, name: str, extra: str = '', **pause) -> Path:
    """The entry config plus ``PauseAfterIterHook`` (numerically the same run) and ``extra``."""
    hooks = list(entry_hooks())
    if pause:
        hooks.append(dict(type='PauseAfterIterHook', after_iter=FAULT_AFTER, **pause))
    path = tmp / f'{name}.py'
    path.write_text(f'_base_ = [{str(tiny(tmp))!r}]\n'
                    "custom_imports = dict(imports=['vvt_mm', 'fault_helpers'], "
                    'allow_failed_imports=False)\n'
                    f'custom_hooks = {hooks!r}\n{extra}')
    return path


def wait_for(condition, proc: subprocess.Popen, log: Path, what: str, timeout=TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f'{what}: the run ended early\n' + log.read_text()[-4000:]
        assert time.monotonic() < deadline, f'{what}: timed out'
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def new_run(work_dir: Path, before: set[Path]) -> Path:
    (run_dir, ) = run_dirs(work_dir) - before
    return run_dir


def wait_for_exit(s: Scenario, proc: subprocess.Popen, log: Path,
                  ranks: tuple[str, ...]) -> None:
    """After a fault: the launcher and ``ranks`` gone (at most 120 s), the time it took
    (``exit_s``) and the checkpoints left behind."""
    start = time.monotonic()
    finish(proc, log, 'train', s, timeout=120)
    while any(alive(s.pids[r]) for r in ranks) and time.monotonic() - start < 120:
        time.sleep(0.1)
    s.exit_s = time.monotonic() - start
    s.extra['checkpoints'] = sorted(p.name for p in s.work_dir.glob('*.pth'))


def resume(s: Scenario, tmp: Path, options: list[str], name: str) -> None:
    """``--resume`` in the scenario's work dir, the uninterrupted config; its run dir."""
    before = run_dirs(s.work_dir)
    run(dist_train(tiny(tmp), 2, s.work_dir, options, '--resume'), tmp / f'{name}_resume.log',
        'resume', s, PORT=str(free_port()))
    s.extra['resumed_run'] = new_run(s.work_dir, before)


# --- the scenarios --------------------------------------------------------------------


def reference(tmp: Path, options: list[str]) -> Scenario:
    s = Scenario(tmp / 'reference')
    run(dist_train(tiny(tmp), 2, s.work_dir, options), tmp / 'reference.log', 'train', s,
        PORT=str(free_port()))
    return s


def killed(tmp: Path, options: list[str]) -> Scenario:
    s = Scenario(tmp / 'killed')
    marks = tmp / 'killed_marks'
    marks.mkdir()
    config = fault_config(tmp, 'killed_cfg', marker_dir=str(marks), ranks=(1, ), until='killed')
    log = tmp / 'killed.log'
    proc = launch(dist_train(config, 2, s.work_dir, options), log, PORT=str(free_port()))
    wait_for(lambda: all((marks / f'rank{r}').exists() for r in (0, 1)), proc, log,
             'killed run')
    s.pids = {f'rank{r}': int((marks / f'rank{r}').read_text()) for r in (0, 1)}
    time.sleep(1)  # rank 0 is in iteration 4 now, waiting for rank 1's gradients
    os.kill(s.pids['rank1'], signal.SIGKILL)
    wait_for_exit(s, proc, log, ranks=('rank0', ))
    resume(s, tmp, options, 'killed')
    return s


def terminated(tmp: Path, options: list[str]) -> Scenario:
    s = Scenario(tmp / 'terminated')
    marks = tmp / 'terminated_marks'
    marks.mkdir()
    config = fault_config(tmp, 'terminated_cfg', marker_dir=str(marks), ranks=(0, 1),
                          until='signal')
    log = tmp / 'terminated.log'
    proc = launch(dist_train(config, 2, s.work_dir, options), log, PORT=str(free_port()))
    wait_for(lambda: all((marks / f'rank{r}').exists() for r in (0, 1)), proc, log,
             'terminated run')
    s.pids = {f'rank{r}': int((marks / f'rank{r}').read_text()) for r in (0, 1)}
    proc.send_signal(signal.SIGTERM)  # dist_train.sh execs torchrun: this is the launcher
    wait_for_exit(s, proc, log, ranks=('rank0', 'rank1'))
    s.extra['last_checkpoint'] = (s.work_dir / 'last_checkpoint').read_text().strip()
    resume(s, tmp, options, 'terminated')
    return s


def non_finite(tmp: Path, options: list[str]) -> Scenario:
    s = Scenario(tmp / 'non_finite')
    config = fault_config(tmp, 'non_finite_cfg', extra=(
        'model = dict(decode_head=dict(loss_decode=dict(type="PoisonedCrossEntropyLoss", '
        f'poison_iter={2 * INTERVAL}, ranks=(1, ))))\n'))
    run(dist_train(config, 2, s.work_dir, options), tmp / 'non_finite.log', 'train', s,
        PORT=str(free_port()))
    s.extra['checkpoints'] = sorted(p.name for p in s.work_dir.glob('*.pth'))
    s.extra['last_checkpoint'] = (s.work_dir / 'last_checkpoint').read_text().strip()
    return s


def corrupt_image(tmp: Path, options: list[str]) -> Scenario:
    s = Scenario(tmp / 'corrupt')
    data = tmp / 'corrupt_data'
    data_root = next(o for o in options if o.startswith('train_dataloader.dataset.data_root='))
    shutil.copytree(data_root.split('=', 1)[1], data)
    bad = sorted((data / 'images' / 'training').glob('*.jpg'))[1]
    bad.write_bytes(bad.read_bytes()[:100])  # a truncated download
    s.extra['bad'] = bad
    run([sys.executable, 'tools/train.py', str(tiny(tmp)), '--work-dir', str(s.work_dir),
         '--cfg-options', *options, f'train_dataloader.dataset.data_root={data}',
         'train_dataloader.num_workers=2'], tmp / 'corrupt.log', 'train', s)
    return s


def two_nodes(tmp: Path, options: list[str]) -> Scenario:
    s = Scenario(tmp / 'node0')
    nodes = dict(NNODES='2', MASTER_ADDR='127.0.0.1')
    port = str(free_port())
    procs = {rank: launch(dist_train(tiny(tmp), 1, tmp / f'node{rank}', options),
                          tmp / f'node{rank}.log', NODE_RANK=str(rank), PORT=port, **nodes)
             for rank in (0, 1)}
    for rank, proc in procs.items():
        finish(proc, tmp / f'node{rank}.log', f'node{rank}', s)
    s.extra['node1_files'] = sorted(p.name for p in (tmp / 'node1').rglob('*')
                                    if p.suffix == '.pth' or p.name == 'last_checkpoint')
    checkpoint = s.work_dir / f'iter_{ITERS}.pth'
    if not checkpoint.is_file():
        return s

    def dist_test(nnodes: int, node_rank: int, gpus: int, port: str) -> list[str]:
        return (['bash', 'tools/dist_test.sh', str(tiny(tmp)), str(checkpoint), str(gpus),
                 '--eval', 'mIoU', '--work-dir', str(tmp / f'test{nnodes}_{node_rank}'),
                 '--cfg-options', *options],
                dict(NNODES=str(nnodes), NODE_RANK=str(node_rank), PORT=port,
                     MASTER_ADDR='127.0.0.1'))

    port1, port2 = str(free_port()), str(free_port())
    tests = {'test_1node': dist_test(1, 0, 2, port1),
             'test_2nodes_0': dist_test(2, 0, 1, port2),
             'test_2nodes_1': dist_test(2, 1, 1, port2)}
    started = {name: launch(cmd, tmp / f'{name}.log', **e) for name, (cmd, e) in tests.items()}
    for name, proc in started.items():
        finish(proc, tmp / f'{name}.log', name, s)
    return s


def slurm(tmp: Path, options: list[str]) -> Scenario:
    s = Scenario(tmp / 'slurm')
    bin_dir = tmp / 'slurm_bin'
    bin_dir.mkdir()
    # srun on one machine: one process per task, with the variables srun sets.
    (bin_dir / 'srun').write_text(
        '#!/usr/bin/env bash\n'
        'ntasks=1\n'
        'while [ $# -gt 0 ]; do case "$1" in\n'
        '  --ntasks=*) ntasks=${1#--ntasks=}; shift;;\n'
        '  -p|-J) shift 2;;\n'
        '  -*) shift;;\n'
        '  *) break;;\n'
        'esac; done\n'
        'pids=()\n'
        'for ((i = 0; i < ntasks; i++)); do\n'
        '  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NTASKS=$ntasks SLURM_NNODES=1 \\\n'
        '  SLURM_NODELIST=fake-node SLURM_JOB_ID=1 "$@" &\n'
        '  pids+=($!)\n'
        'done\n'
        'status=0\n'
        'for pid in "${pids[@]}"; do wait "$pid" || status=$?; done\n'
        'exit $status\n')
    (bin_dir / 'scontrol').write_text('#!/usr/bin/env bash\necho 127.0.0.1\n')
    for tool in ('srun', 'scontrol'):
        (bin_dir / tool).chmod(0o755)
    run(['bash', 'tools/slurm_train.sh', 'cpu', 'vvt', str(tiny(tmp)), '--work-dir',
         str(s.work_dir), '--cfg-options', *options], tmp / 'slurm.log', 'train', s,
        GPUS='2', GPUS_PER_NODE='2', CPUS_PER_TASK='1', MASTER_PORT=str(free_port()),
        PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    return s


@pytest.fixture(scope='module')
def scenarios(tmp_path_factory, tiny_ade20k, upernet_options,
              one_block_upernet_text) -> dict[str, Future]:
    tmp = tmp_path_factory.mktemp('dist_faults')
    tiny(tmp).write_text(one_block_upernet_text)
    options = [*upernet_options(tiny_ade20k, ITERS), 'optim_wrapper.optimizer.lr=0.001',
               'param_scheduler.0.start_factor=1.0']
    entry_hooks()
    scenarios = (reference, killed, terminated, non_finite, corrupt_image, two_nodes, slurm)
    pool = ThreadPoolExecutor(max_workers=len(scenarios))
    futures = {f.__name__: pool.submit(f, tmp, options) for f in scenarios}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def result(scenarios: dict[str, Future], name: str) -> Scenario:
    return scenarios[name].result(timeout=3 * TIMEOUT)


def reference_losses(scenarios) -> dict[int, dict]:
    ref = result(scenarios, 'reference')
    assert ref.returncodes['train'] == 0, ref.logs['train'][-4000:]
    (run_dir, ) = run_dirs(ref.work_dir)
    losses = logged_scalars(run_dir)
    assert sorted(losses) == list(range(1, ITERS + 1))
    assert losses[ITERS]['loss'] != losses[1]['loss']
    return losses


def loss_diff(losses: dict[int, dict], ref: dict[int, dict]) -> float:
    keys = [k for k in ref[1] if 'loss' in k]
    return max(abs(losses[i][k] - ref[i][k]) for i in losses for k in keys)


def test_a_sigkilled_rank_ends_the_job_and_resume_loses_nothing(scenarios):
    s = result(scenarios, 'killed')
    out = s.logs['train']
    assert s.returncodes['train'] != 0
    assert s.exit_s < 60, f'processes still alive {s.exit_s:.0f} s after the kill'
    # The launcher's summary: rank 1 is the root cause, killed by SIGKILL.
    root = out.split('Root Cause (first observed failure):', 1)[1]
    assert re.search(r'rank\s+: 1 \(local_rank: 1\)', root) and 'SIGKILL' in root, out[-3000:]
    # The survivor names the rank it lost (and the checkpoint to resume from).
    lost = re.search(r'^error: rank 0: lost rank 1 \(\S+ pid (\d+)\).*$', out, re.M)
    assert lost and int(lost.group(1)) == s.pids['rank1'], out[-3000:]
    assert 'iter_2.pth (continue with --resume)' in lost.group(0)
    assert s.extra['checkpoints'] == ['iter_2.pth']

    assert s.returncodes['resume'] == 0, s.logs['resume'][-4000:]
    ref, resumed = reference_losses(scenarios), logged_scalars(s.extra['resumed_run'])
    # Resumed at the iteration after the checkpoint: no iteration lost beyond it.
    assert sorted(resumed) == list(range(INTERVAL + 1, ITERS + 1))
    diff = loss_diff(resumed, ref)
    print(f'\nSIGKILL of rank 1 after iteration {FAULT_AFTER}: all processes gone after '
          f'{s.exit_s:.1f} s; resumed from iter_{INTERVAL}; max |loss diff| vs '
          f'uninterrupted over iterations {INTERVAL + 1}-{ITERS}: {diff:.3g}')
    print(f'  survivor: {lost.group(0)[:200]}')
    assert diff <= 1e-6


def test_sigterm_to_the_launcher_checkpoints_then_resume_continues(scenarios):
    s = result(scenarios, 'terminated')
    out = s.logs['train']
    assert s.returncodes['train'] != 0  # the job did not finish
    assert s.exit_s < 60
    assert f'SIGTERM received: stopping after iteration {FAULT_AFTER}; checkpoint ' in out
    # Both workers stopped in the hook: no traceback from tools/train.py.
    assert 'tools/train.py", line' not in out, out[-4000:]
    assert s.extra['checkpoints'] == ['iter_2.pth', f'iter_{FAULT_AFTER}.pth']
    assert s.extra['last_checkpoint'] == str(s.work_dir / f'iter_{FAULT_AFTER}.pth')

    assert s.returncodes['resume'] == 0, s.logs['resume'][-4000:]
    ref, resumed = reference_losses(scenarios), logged_scalars(s.extra['resumed_run'])
    assert sorted(resumed) == list(range(FAULT_AFTER + 1, ITERS + 1))
    diff = loss_diff(resumed, ref)
    line = re.search(r'SIGTERM received: .*$', out, re.M).group(0)
    print(f'\nSIGTERM to the launcher after iteration {FAULT_AFTER}: all processes gone after '
          f'{s.exit_s:.1f} s; {line}; max |loss diff| vs uninterrupted over iterations '
          f'{FAULT_AFTER + 1}-{ITERS}: {diff:.3g}')
    assert diff <= 1e-6


def test_a_nan_loss_stops_every_rank_before_it_is_checkpointed(scenarios):
    s = result(scenarios, 'non_finite')
    out = s.logs['train']
    assert s.returncodes['train'] != 0
    errors = re.findall(r'^error: .*$', out, re.M)
    assert len(errors) == 1, out[-4000:]  # printed once, by rank 0
    assert errors[0].startswith(f'error: iteration {2 * INTERVAL}: non-finite loss '
                                'decode.loss_ce (on rank 1); '), errors[0]
    assert f'the last good checkpoint is {s.work_dir / "iter_2.pth"}' in errors[0]
    assert 'tools/train.py", line' not in out
    # Iteration 4 is a checkpoint iteration; its poisoned state was not saved.
    assert s.extra['checkpoints'] == ['iter_2.pth']
    assert s.extra['last_checkpoint'] == str(s.work_dir / 'iter_2.pth')
    # The iterations before the NaN are the reference's.
    (run_dir, ) = run_dirs(s.work_dir)
    losses = logged_scalars(run_dir)
    assert sorted(losses) == list(range(1, 2 * INTERVAL))
    assert loss_diff(losses, reference_losses(scenarios)) <= 1e-6
    print(f'\nNaN decode.loss_ce on rank 1 at iteration {2 * INTERVAL}: {errors[0][:200]}')


def test_a_corrupt_image_stops_training_with_its_file_named(scenarios):
    s = result(scenarios, 'corrupt_image')
    out = s.logs['train']
    assert s.returncodes['train'] == 1
    (line, ) = re.findall(r'^error: .*$', out, re.M)
    bad = repr(str(s.extra['bad']))
    assert line.startswith(f'error: sample 1 of ADE20KDataset (img_path={bad}'), line
    assert 'LoadImageFromFile failed: ' in line and 'DataLoader worker process' in line
    assert 'Traceback' not in out
    print(f'\ncorrupt image, 2 workers: {line[:200]}')


def test_two_nodes_train_as_one_job_and_test_to_the_same_miou(scenarios):
    s = result(scenarios, 'two_nodes')
    for node in ('node0', 'node1'):
        assert s.returncodes[node] == 0, s.logs[node][-4000:]
    assert 'GPU number: 2' in s.logs['node0']  # one world of 2 ranks
    (run_dir, ) = run_dirs(s.work_dir)
    losses, ref = logged_scalars(run_dir), reference_losses(scenarios)
    assert sorted(losses) == sorted(ref)
    diff = loss_diff(losses, ref)
    # Checkpoints are written once, by rank 0 on node 0.
    assert sorted(p.name for p in s.work_dir.glob('*.pth')) == \
        [f'iter_{i}.pth' for i in range(INTERVAL, ITERS + 1, INTERVAL)]
    assert s.extra['node1_files'] == []

    mious = {}
    for name in ('test_1node', 'test_2nodes_0'):
        assert s.returncodes[name] == 0, s.logs[name][-4000:]
        mious[name] = float(re.search(r'^mIoU\s+([0-9.]+)$', s.logs[name], re.M).group(1))
    assert s.returncodes['test_2nodes_1'] == 0, s.logs['test_2nodes_1'][-4000:]
    print(f'\ntwo nodes x 1 process: max |loss diff| vs 1 node x 2: {diff:.3g}; '
          f'mIoU 1 node {mious["test_1node"]}, 2 nodes {mious["test_2nodes_0"]}')
    assert diff <= 1e-6
    assert mious['test_1node'] == mious['test_2nodes_0'] > 0



def test_slurm_train_runs_the_same_job(scenarios):
    s = result(scenarios, 'slurm')
    assert s.returncodes['train'] == 0, s.logs['train'][-4000:]
    assert 'distributed slurm launch on CPU with gloo' in s.logs['train']
    (run_dir, ) = run_dirs(s.work_dir)
    losses, ref = logged_scalars(run_dir), reference_losses(scenarios)
    assert sorted(losses) == sorted(ref)
    diff = loss_diff(losses, ref)
    print(f'\nslurm_train.sh, 2 tasks: max |loss diff| vs dist_train.sh: {diff:.3g}')
    assert diff <= 1e-6
    assert sorted(p.name for p in s.work_dir.glob('*.pth')) == \
        [f'iter_{i}.pth' for i in range(INTERVAL, ITERS + 1, INTERVAL)]
