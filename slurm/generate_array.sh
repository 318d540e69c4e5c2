#!/bin/bash
#SBATCH --job-name=star_generate
#SBATCH --array=0-3
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=08:00:00
#SBATCH --output=slurm-%x-%A_%a.out
# Stage 1 of iteration N split over an array job: task I generates shard I of the round's prompts.
#
#   sbatch --array=0-3 slurm/generate_array.sh CONFIG=configs/demo.yaml N=1 [RUN=] [RESULTS=]
#   bash slurm/generate_array.sh CONFIG=configs/demo.yaml N=1 SHARD=0 NUM_SHARDS=4   # one shard, no SLURM
#
# The number of shards is the array's size (SLURM_ARRAY_TASK_COUNT); then run slurm/merge_shards.sh
# (scripts/submit.sh SHARDS=S chains array -> merge -> the rest of the iteration). Every shard
# samples each request from its own seeded stream, so the merged file equals one unsharded run's.
# Run 'make setup' once before submitting. A failed shard resumes when resubmitted.
set -euo pipefail
USAGE_FROM=${BASH_SOURCE[0]}
. "$(dirname "$USAGE_FROM")/common.sh" 2>/dev/null || . "${SLURM_SUBMIT_DIR:-.}/slurm/common.sh"

parse_args CONFIG N RUN RESULTS SHARD NUM_SHARDS -- "$@"
SHARD=${SHARD:-${SLURM_ARRAY_TASK_ID:-}}
NUM_SHARDS=${NUM_SHARDS:-${SLURM_ARRAY_TASK_COUNT:-}}
require CONFIG "the run's config, e.g. CONFIG=configs/demo.yaml"
require N "the iteration (>= 1)"
require SHARD "this task's shard: SLURM_ARRAY_TASK_ID under an array job, else SHARD=I"
require NUM_SHARDS "the number of shards: the array's size, else NUM_SHARDS=S"
enter_repo
need_venv
log_to_run "generate_$(printf '%02d' "$N")_shard_${SHARD}_of_${NUM_SHARDS}"
.venv/bin/python create_data.py --config "$CONFIG" --run_dir "$RESULTS/$RUN" --iteration "$N" \
  --steps generate --shard "$SHARD" --num_shards "$NUM_SHARDS"
