#!/bin/bash
# Seed 004, EFT data: LLM-as-a-judge examples. MODEL_PATH (the SFT baseline, or the base model) answers the
# EFT prompts of the built-in ifeval task; each reply gets the score its rule checks give on the additive
# 5-point rubric and a justification that cites them; the scores are balanced. Written for eft.sh.
#
#   MODEL_PATH=saved_models/smollm2-ift bash scripts/eft_data_prepare.sh          # data/eft.json
#
# Settings: MODEL_PATH (default smollm2-135m), OUTPUT (default data/eft.json), N_PROMPTS, N_SAMPLES, CONFIG.
# The paper keeps the SFT baseline's own judgements whose ranking agrees with human rankings; here the
# targets are the rule-checked truth (docs/methods/self-rewarding.md).
set -euo pipefail
USAGE_FROM=${BASH_SOURCE[0]}
KIND=eft
. "$(dirname "$USAGE_FROM")/self_rewarding_common.sh"
sr_setup "$@"
.venv/bin/python eft_data.py --config "$CONFIG" "${SETS[@]}" --model_name "${MODEL_PATH:-smollm2-135m}" \
  --output "${OUTPUT:-data/eft.json}"
