#!/bin/bash
#SBATCH --job-name=star_train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=08:00:00
#SBATCH --output=slurm-%x-%j.out
# The training stage of iteration N over several nodes: srun starts one `accelerate launch` per
# node, which starts PROCS_PER_NODE processes there; node rank, node count and the main node's
# address come from SLURM (SLURM_NODEID, SLURM_NNODES, the first host of SLURM_JOB_NODELIST).
#
#   sbatch --nodes=2 --gpus-per-node=4 slurm/train_multinode.sh CONFIG=configs/demo.yaml N=1 \
#       [ACCELERATE_CONFIG=configs/accelerate/fsdp.yaml] [PROCS_PER_NODE=4] [RUN=] [RESULTS=]
#
# The iteration's training set must exist (make $RESULTS/$RUN/iter_NN/train.done, or the stages
# before it); the rest of the iteration (evaluation) then runs with `make iter` or iter.sh.
# PROCS_PER_NODE defaults to the node's GPUs (SLURM_GPUS_ON_NODE), else 1. Without
# ACCELERATE_CONFIG the processes run plain DDP (NCCL on GPUs, gloo on CPUs); the configs under
# configs/accelerate/ give DDP, FSDP and DeepSpeed ZeRO-2. Run 'make setup' once before submitting.
set -euo pipefail
USAGE_FROM=${BASH_SOURCE[0]}
. "$(dirname "$USAGE_FROM")/common.sh" 2>/dev/null || . "${SLURM_SUBMIT_DIR:-.}/slurm/common.sh"

parse_args CONFIG N RUN RESULTS ACCELERATE_CONFIG PROCS_PER_NODE MAIN_PORT -- "$@"
require CONFIG "the run's config, e.g. CONFIG=configs/demo.yaml"
require N "the iteration to train (>= 1)"
[ -n "${SLURM_JOB_ID:-}" ] || { echo "train_multinode.sh: submit it with sbatch (it reads the nodes from SLURM)" >&2; exit 2; }
enter_repo
need_venv
log_to_run "train_multinode_$(printf '%02d' "$N")"
PROCS_PER_NODE=${PROCS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=${MAIN_PORT:-$((29500 + SLURM_JOB_ID % 1000))}
total=$((SLURM_NNODES * PROCS_PER_NODE))
launch=(.venv/bin/python -m accelerate.commands.launch --num_machines "$SLURM_NNODES" --num_processes "$total"
        --main_process_ip "$MAIN_ADDR" --main_process_port "$MAIN_PORT" --rdzv_backend static --same_network)
if [ -n "${ACCELERATE_CONFIG:-}" ]; then
  launch+=(--config_file "$ACCELERATE_CONFIG")
elif [ "$total" -gt 1 ]; then
  launch+=(--multi_gpu)  # accelerate's torchrun launcher: DDP on GPUs, and the only multi-process path on CPUs
fi
echo "nodes $SLURM_NNODES x $PROCS_PER_NODE processes, main $MAIN_ADDR:$MAIN_PORT"
export CONFIG N RUN RESULTS
# one task per node; each computes its own machine rank from SLURM_NODEID
srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c \
  'exec "$@" --machine_rank "$SLURM_NODEID" train.py --config "$CONFIG" --run_dir "$RESULTS/$RUN" --iteration "$N"' \
  _ "${launch[@]}"
