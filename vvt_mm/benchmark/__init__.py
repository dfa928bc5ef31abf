"""Speed and memory of vicinity attention, whole backbones and deployment paths.

The benchmark behind ``tools/benchmark.py``, as ratios measured in one run:

* :mod:`.measurement`: clocks, best-of-N timing and exact peak memory
  (CPU: resident-set deltas with malloc pinned, or a fresh process);
* :mod:`.suites`: the attention core, every token mixer, whole backbones;
* :mod:`.official`: VVT-S against the official model's structure
  (:mod:`.official_structure_vvt`) and against the machine's GEMM rate;
* :mod:`.highres`: backbones at Cityscapes' whole-image size (1024x2048);
* :mod:`.deploy`: VVT through onnxruntime and torch.compile against eager;
* :mod:`.report`: tables, target checks, ``results.csv`` and the plot;
* :mod:`.cli`: the flags and the run.

Not imported by the rest of ``vvt_mm``: it sits on top of the models.
"""
