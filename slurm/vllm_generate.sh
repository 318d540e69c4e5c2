#!/bin/bash
#SBATCH --job-name=selftrain_vllm
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=08:00:00
#SBATCH --output=slurm-%x-%j.out
# One iteration on a GPU node whose generation goes through a vLLM server that each generating
# stage launches for its own model on a free loopback port and stops when it ends
# (selftrain/generation/server.py). The stages are the same Make targets as `make iter`.
#
#   sbatch slurm/vllm_generate.sh CONFIG=recipes/star-gsm8k-llama3.2-3b.yaml N=1 [RUN=name] [RESULTS=results]
#   bash slurm/vllm_generate.sh CONFIG=recipes/star-gsm8k-llama3.2-3b.yaml N=1          # the same without SLURM
#
# CONFIG must select the server itself (the Makefile passes no config overrides to the stages):
#   generation:
#     backend: openai
#     server: vllm
#     server_args: ["--gpu-memory-utilization", "0.85"]   # optional, appended to `vllm serve`
# vLLM lives in its own venv: run `make setup-vllm` once on a GPU node (it installs the GPU build
# where nvidia-smi works; VLLM_BUILD=gpu forces it), or set generation.server_python.
# Submit from the repository root; the log also goes to RESULTS/RUN/logs/vllm_iter_NN_<jobid>.log,
# the server's own log to a temporary file (removed after a clean stop, named in the error if it fails).
set -euo pipefail
USAGE_FROM=${BASH_SOURCE[0]}
. "$(dirname "$USAGE_FROM")/common.sh" 2>/dev/null || . "${SLURM_SUBMIT_DIR:-.}/slurm/common.sh"

parse_args CONFIG N RUN RESULTS -- "$@"
require CONFIG "a config whose generation section sets backend: openai and server: vllm"
require N "the iteration: 0 for the baseline, then 1, 2, ..."
enter_repo
need_venv
server=$(.venv/bin/python -m selftrain.config "$CONFIG" generation.server)
[ "$server" = vllm ] || {
  echo "$(basename "$USAGE_FROM"): $CONFIG has generation.server '${server}', not vllm (see --help)" >&2; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "warning: nvidia-smi sees no GPU on $(hostname)" >&2
log_to_run "vllm_iter_$(printf '%02d' "$N")"
make --no-print-directory iter N="$N" CONFIG="$CONFIG" RUN="$RUN" RESULTS="$RESULTS"
echo "[$(date -Is)] iteration $N of $RUN done (generation through vLLM)"
