#!/bin/bash
#SBATCH --job-name=star_merge
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=01:00:00
#SBATCH --output=slurm-%x-%j.out
# Join the finished generation shards of iteration N into the iteration's samples file and marker.
#
#   sbatch --dependency=afterok:<array job id> slurm/merge_shards.sh CONFIG=configs/demo.yaml N=1 NUM_SHARDS=4
#   bash slurm/merge_shards.sh CONFIG=configs/demo.yaml N=1 NUM_SHARDS=4
#
# The result is the file one unsharded run would write, record for record and in the same order;
# `make iter N=...` (or slurm/iter.sh) then goes on with judging.
set -euo pipefail
USAGE_FROM=${BASH_SOURCE[0]}
. "$(dirname "$USAGE_FROM")/common.sh" 2>/dev/null || . "${SLURM_SUBMIT_DIR:-.}/slurm/common.sh"

parse_args CONFIG N RUN RESULTS NUM_SHARDS -- "$@"
require CONFIG "the run's config, e.g. CONFIG=configs/demo.yaml"
require N "the iteration (>= 1)"
require NUM_SHARDS "the number of shards to merge"
enter_repo
need_venv
log_to_run "merge_$(printf '%02d' "$N")"
.venv/bin/python create_data.py --config "$CONFIG" --run_dir "$RESULTS/$RUN" --iteration "$N" \
  --merge_shards "$NUM_SHARDS"
