"""Speed and memory of vicinity attention, whole backbones and deployment paths, as ratios.

One run prints tables of ratios measured side by side (attention core, every
token mixer, whole backbones, VVT-S against the official model's structure and
against the machine's GEMM rate, backbones at 1024x2048, VVT-S through
onnxruntime and torch.compile vs eager) and the target checks, and writes
``results.csv``, ``summary.txt`` and ``benchmark.png`` into ``--out``. The code
lives in :mod:`vvt_mm.benchmark`; its module docstrings say how time and memory
are measured.

Example::

    python tools/benchmark.py --threads 1               # full sweep (CPU: ~45 min)
    python tools/benchmark.py --quick --out /tmp/bench  # smoke test
    python tools/benchmark.py --suites deploy           # onnxruntime / torch.compile only
    python tools/benchmark.py --suites core official highres --core-sizes 128 256
                                                        # vs official, GEMM rate, 1024x2048
"""
from vvt_mm.benchmark.cli import main

if __name__ == '__main__':
    main()
