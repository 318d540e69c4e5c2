#!/bin/bash
# Seed 004, IFT seed data: instruction -> response pairs, offline. MODEL_PATH answers the IFT prompts of the
# built-in ifeval task (N_SAMPLES replies each) and the replies that follow every instruction are kept
# (rejection sampling with lm-eval's IFEval checkers), written as ShareGPT conversations for ift.sh.
#
#   bash scripts/ift_data_prepare.sh                    # data/seed.json from smollm2-135m
#   MODEL_PATH=smollm2-135m N_PROMPTS=20 N_SAMPLES=2 OUTPUT=data/seed.json bash scripts/ift_data_prepare.sh
#
# Settings: MODEL_PATH (default smollm2-135m), OUTPUT (default data/seed.json), N_PROMPTS, N_SAMPLES,
# CONFIG (default configs/self_rewarding.yaml). A rerun resumes (data/seed.samples.jsonl, .judged.jsonl).
set -euo pipefail
USAGE_FROM=${BASH_SOURCE[0]}
KIND=ift
. "$(dirname "$USAGE_FROM")/self_rewarding_common.sh"
sr_setup "$@"
.venv/bin/python ift_data.py --config "$CONFIG" "${SETS[@]}" --model_name "${MODEL_PATH:-smollm2-135m}" \
  --output "${OUTPUT:-data/seed.json}"
