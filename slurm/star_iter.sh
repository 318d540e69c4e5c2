#!/bin/bash
#SBATCH --job-name=star_iter
#SBATCH --cpus-per-task=2
#SBATCH --mem=12G
#SBATCH --time=08:00:00
#SBATCH --output=slurm-%x-%j.out
# The earlier name of slurm/iter.sh (same arguments), kept so existing submit lines keep working.
#   sbatch slurm/star_iter.sh CONFIG=configs/demo.yaml N=2
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
[ -f "$here/iter.sh" ] || here="${SLURM_SUBMIT_DIR:-.}/slurm"
exec bash "$here/iter.sh" "$@"
