#!/usr/bin/env bash
# Train on a Slurm cluster (the OpenMMLab slurm_train.sh contract).
#
#   [GPUS=16] [GPUS_PER_NODE=8] bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py args...]
#
# Environment: GPUS (8, total tasks = GPUs), GPUS_PER_NODE (8), CPUS_PER_TASK (5),
# SRUN_ARGS (extra srun options, e.g. "--quotatype=auto"), PYTHON (python).
# Our configs assume 8 GPUs x 2 (segmentation, detection) or 8 x 128 images
# (ImageNet); with another GPUS, adjust the batch or pass --cfg-options.
# Each task runs tools/train.py --launcher slurm; mmengine reads SLURM_PROCID,
# SLURM_NTASKS and the node list, MASTER_PORT defaults to 29500.
set -x

PARTITION=$1
JOB_NAME=$2
CONFIG=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
TOOLS=$(cd "$(dirname "$0")" && pwd)

if [ $# -lt 3 ]; then
  echo "usage: bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py args...]" >&2
  exit 2
fi

PYTHONPATH="$TOOLS/..":$PYTHONPATH \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    --gres=gpu:"${GPUS_PER_NODE}" \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "${PYTHON}" -u "$TOOLS/train.py" "${CONFIG}" --launcher="slurm" "${@:4}"
