# Shared by the sbatch scripts: KEY=VALUE arguments, required settings, the repository root, logs.
# Sourced, not run. Each script sets USAGE_FROM (its own path) before sourcing.

usage() { sed -n '2,/^set -euo/p' "$USAGE_FROM" | grep '^#' | grep -v '^#SBATCH' | sed 's/^# \{0,1\}//'; }

# parse_args NAME... -- "$@": accept NAME=VALUE for the listed names (exported), --help, nothing else
parse_args() {
  local names=() arg name ok
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do names+=("$1"); shift; done
  shift
  for arg in "$@"; do
    case "$arg" in -h|--help) usage; exit 0 ;; esac
    ok=
    for name in "${names[@]}"; do
      case "$arg" in "$name"=*) export "${arg?}"; ok=1 ;; esac
    done
    [ -n "$ok" ] || { echo "$(basename "$USAGE_FROM"): unknown argument '$arg' (expected ${names[*]/%/=...} or --help)" >&2; exit 2; }
  done
}

require() {  # require NAME "what it is": a clear message for each missing setting
  [ -n "${!1:-}" ] || { echo "$(basename "$USAGE_FROM"): $1 is not set ($2)" >&2; exit 2; }
}

enter_repo() {  # the job runs in the directory it was submitted from, which must be the repository root
  cd "${SLURM_SUBMIT_DIR:-$(dirname "$USAGE_FROM")/..}"
  if [ ! -f Makefile ] || [ ! -f create_data.py ]; then
    echo "$(basename "$USAGE_FROM"): $(pwd) is not the selftrain repository root; submit from there" >&2; exit 2
  fi
  [ -f "$CONFIG" ] || { echo "$(basename "$USAGE_FROM"): CONFIG=$CONFIG does not exist (relative to $(pwd))" >&2; exit 2; }
  RUN=${RUN:-$(basename "${CONFIG%.*}")}
  RESULTS=${RESULTS:-results}
  export RUN RESULTS
}

log_to_run() {  # log_to_run NAME: everything from here on also goes to RESULTS/RUN/logs/NAME_<jobid>.log
  mkdir -p "$RESULTS/$RUN/logs"
  local log="$RESULTS/$RUN/logs/${1}_${SLURM_JOB_ID:-local}${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}.log"
  exec > >(tee -a "$log") 2>&1
  echo "[$(date -Is)] $1 on $(hostname), job ${SLURM_JOB_ID:-none (not under SLURM)}, log $log"
}

need_venv() {  # array tasks and merges call Python directly: the environment must exist already
  [ -x .venv/bin/python ] && [ -f .venv/.installed ] || {
    echo "$(basename "$USAGE_FROM"): .venv is missing: run 'make setup' once before submitting" >&2; exit 2; }
}
