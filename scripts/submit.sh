#!/bin/bash
# Submit iterations FROM..TO of a run to SLURM as a chain: each job starts only when the one before
# it succeeded (--dependency=afterok), and a failure cancels the rest (--kill-on-invalid-dep=yes),
# so nothing is left pending forever. With SHARDS=S > 1, stage 1 of each iteration is an array of
# S generation shards, then a merge, then the rest of the iteration.
#
#   bash scripts/submit.sh CONFIG=configs/demo.yaml [RUN=] [RESULTS=] [FROM=0] [TO=num_rounds] [SHARDS=1] [-- sbatch options]
#   make submit CONFIG=configs/demo.yaml ROUNDS=3 SHARDS=4
#
# Prints one line per job: "<job id> <what it runs>". Run from the repository root after 'make setup'.
set -euo pipefail
USAGE_FROM=${BASH_SOURCE[0]}
. "$(dirname "$USAGE_FROM")/../slurm/common.sh"

args=()
while [ $# -gt 0 ]; do [ "$1" = "--" ] && { shift; break; }; args+=("$1"); shift; done
extra=("$@")  # passed to every sbatch call (e.g. --partition=gpu --time=2:00:00)
parse_args CONFIG RUN RESULTS FROM TO SHARDS -- "${args[@]+"${args[@]}"}"
require CONFIG "the run's config, e.g. CONFIG=configs/demo.yaml"
enter_repo
need_venv
command -v sbatch >/dev/null || { echo "submit.sh: sbatch not found: no SLURM here (run 'make rounds' instead)" >&2; exit 2; }
FROM=${FROM:-0}
TO=${TO:-$(.venv/bin/python -m selftrain.config "$CONFIG" num_rounds)}
SHARDS=${SHARDS:-1}
for v in FROM TO SHARDS; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "submit.sh: $v=${!v} must be a non-negative integer" >&2; exit 2; }
done
[ "$SHARDS" -ge 1 ] || { echo "submit.sh: SHARDS must be >= 1" >&2; exit 2; }
if [ "$SHARDS" -gt 1 ] && [ "$(.venv/bin/python -m selftrain.config "$CONFIG" method)" = distill ]; then
  echo "submit.sh: SHARDS=$SHARDS: CONFIG=$CONFIG has method distill, whose rounds sample Track B's prompt with distill_samples.py, which is not sharded; use SHARDS=1" >&2
  exit 2
fi
mkdir -p "$RESULTS/$RUN/logs"

previous=""
submit() {  # submit WHAT SBATCH-ARGS...: chained after the previous job; prints and remembers the id
  local what=$1; shift
  local dep=()
  [ -n "$previous" ] && dep=(--dependency="afterok:$previous" --kill-on-invalid-dep=yes)
  previous=$(sbatch --parsable "${dep[@]+"${dep[@]}"}" "${extra[@]+"${extra[@]}"}" \
    --output="$RESULTS/$RUN/logs/slurm-%x-%j.out" "$@")
  previous=${previous%%;*}  # "id;cluster" on multi-cluster setups
  echo "$previous $what"
}

common=(CONFIG="$CONFIG" RUN="$RUN" RESULTS="$RESULTS")
for n in $(seq "$FROM" "$TO"); do
  if [ "$SHARDS" -gt 1 ] && [ "$n" -ge 1 ]; then
    submit "iteration $n: generate, $SHARDS shards" --array="0-$((SHARDS - 1))" \
      --output="$RESULTS/$RUN/logs/slurm-%x-%A_%a.out" slurm/generate_array.sh "${common[@]}" N="$n"
    submit "iteration $n: merge shards" slurm/merge_shards.sh "${common[@]}" N="$n" NUM_SHARDS="$SHARDS"
  fi
  submit "iteration $n" slurm/iter.sh "${common[@]}" N="$n"
done
