#!/usr/bin/env bash
# Create (or refresh) the virtual environment with the whole OpenMMLab stack.
#
#   VENV=.venv bash tools/setup_env.sh      # what `make install` runs
#
# Idempotent: when every package is present and this script, requirements.txt
# and setup.cfg are unchanged since the last success, it exits in seconds.
# mmcv 2.1.0 has no wheel for modern torch, so it is compiled once (about 20
# minutes on 2 cores, CPU ops) and the wheel is cached outside the clone in
# $VVT_MM_WHEEL_CACHE (default ~/.cache/vvt_mm/wheels) for every later run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
# The mmcv build runs in another directory, so a relative VENV (the Makefile's
# `.venv`) must be made absolute against the caller's directory first.
case $VENV in /*) ;; *) VENV=$PWD/$VENV ;; esac
PYTHON=${PYTHON:-python3.11}
WHEEL_CACHE=${VVT_MM_WHEEL_CACHE:-$HOME/.cache/vvt_mm/wheels}
if [ "${CI:-}" = "true" ]; then
  # CI proves the cold path: nothing from outside the clone is reused (no
  # cached mmcv wheel, no pip cache), so a broken first install cannot hide.
  WHEEL_CACHE=$ROOT/build/ci-wheels
  export PIP_NO_CACHE_DIR=1
fi
MMCV_VERSION=2.1.0
TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"

log() { printf '[setup_env] %s\n' "$*"; }

command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
STAMP="$VENV/.vvt_mm_setup_stamp"
want_stamp=$(cat "$ROOT/tools/setup_env.sh" "$ROOT/requirements.txt" "$ROOT/setup.cfg" \
  | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] \
   && "$VENV/bin/python" -c "import mmcv.ops, mmseg, mmdet, mmpretrain, vvt_mm" 2>/dev/null; then
  log "environment $VENV is complete (delete $STAMP to force a refresh)"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

log "installing torch and build tools"
# torch comes first: later packages must not pull a different build.
"${PIP[@]}" install -q $TORCH_SPEC
# setuptools<70: mmcv's setup.py and mmengine import pkg_resources.
log "(pip may warn that torch wants setuptools>=77: expected, torch runs with the older one)"
"${PIP[@]}" install -q "setuptools<70" wheel ninja "mmengine>=0.10.7,<1.0" "numpy"

if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  torch_tag=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
  # Wheels keep their tagged file names, so the torch build goes in the folder name.
  wheel_dir="$WHEEL_CACHE/torch$torch_tag"
  wheel=$(ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    log "no cached mmcv $MMCV_VERSION wheel for torch $torch_tag: compiling (about 20 min on 2 cores)"
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    (cd "$build" && "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: \
      "mmcv==$MMCV_VERSION")
    tar -xzf "$build/mmcv-$MMCV_VERSION.tar.gz" -C "$build"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0 asks for C++14/17.
    sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$build/mmcv-$MMCV_VERSION/setup.py"
    (cd "$build/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
      "${PIP[@]}" wheel -q --no-deps --no-build-isolation -w "$build/dist" .)
    mkdir -p "$wheel_dir"
    cp "$build"/dist/mmcv-*.whl "$wheel_dir/"
    wheel=$(ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl | head -n1)
    log "cached $wheel"
  fi
  "${PIP[@]}" install -q --no-deps "$wheel"
fi

log "installing mmsegmentation, mmpretrain, mmdet"
"${PIP[@]}" install -q -r "$ROOT/requirements.txt"
log "installing vvt_mm (editable) with test extras"
# --no-deps: resolving torch's own metadata would pull setuptools>=77 back in.
"${PIP[@]}" install -q --no-build-isolation --no-deps -e "$ROOT"
read -r -a test_extras <<< "$("$VENV/bin/python" -c "import configparser; c = configparser.ConfigParser(); c.read('$ROOT/setup.cfg'); print(' '.join(c['options.extras_require']['tests'].split()))")"
"${PIP[@]}" install -q "${test_extras[@]}"
"$VENV/bin/python" -c "import mmcv.ops, mmseg.models, mmdet.models, mmpretrain.models, vvt_mm; print('[setup_env] stack imports fine: torch', __import__('torch').__version__, 'mmcv', mmcv.__version__)"
echo "$want_stamp" > "$STAMP"
