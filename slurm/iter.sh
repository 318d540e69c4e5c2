#!/bin/bash
#SBATCH --job-name=selftrain_iter
#SBATCH --cpus-per-task=2
#SBATCH --mem=12G
#SBATCH --time=08:00:00
#SBATCH --output=slurm-%x-%j.out
# One iteration as one batch job, driven by the same Make targets and config as a local run; the
# config's `method` picks the stage chain (mk/<method>.mk), the job aims at the iteration's eval marker.
#
#   sbatch slurm/iter.sh CONFIG=configs/demo.yaml N=2 [RUN=name] [RESULTS=results]
#   CONFIG=configs/demo.yaml N=2 sbatch slurm/iter.sh        # or as environment variables
#   bash slurm/iter.sh CONFIG=configs/demo.yaml N=2          # the same iteration without SLURM
#
# N=0 is the base-model evaluation. Submit from the repository root (the job runs there);
# override the #SBATCH defaults on the command line as usual (sbatch --time=1:00:00 --mem=32G ...).
# The log also goes to RESULTS/RUN/logs/iter_NN_<jobid>.log. Resubmitting after a failure
# resumes: finished stages have their markers, an unfinished stage continues from its records.
set -euo pipefail
USAGE_FROM=${BASH_SOURCE[0]}
. "$(dirname "$USAGE_FROM")/common.sh" 2>/dev/null || . "${SLURM_SUBMIT_DIR:-.}/slurm/common.sh"

parse_args CONFIG N RUN RESULTS -- "$@"
require CONFIG "the run's config, e.g. CONFIG=configs/demo.yaml"
require N "the iteration: 0 for the baseline, then 1, 2, ..."
enter_repo
log_to_run "iter_$(printf '%02d' "$N")"
make --no-print-directory iter N="$N" CONFIG="$CONFIG" RUN="$RUN" RESULTS="$RESULTS"
echo "[$(date -Is)] iteration $N of $RUN done"
