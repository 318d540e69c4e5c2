#!/bin/bash
# Seed 004, IFT: supervised fine-tuning of MODEL_PATH on the instruction data in DATA_PATH (the SFT baseline).
#
#   export DATA_PATH=data/seed.json CONV_TEMPLATE=auto OUTPUT_DIR=saved_models/smollm2-ift MODEL_PATH=smollm2-135m
#   bash scripts/ift.sh
#
# DATA_PATH: JSON list or JSONL of {conversations: [{from: human, value}, {from: gpt, value}]} (the seed's
# seed.json), {messages: [...]} or {prompt, response}. CONV_TEMPLATE: auto (the tokenizer's own chat
# template) or plain. Optional: CONFIG, LR, EPOCHS, TRAIN_BATCH_SIZE, GA. The rendered training file is
# written beside OUTPUT_DIR as <OUTPUT_DIR>.ift.jsonl.
set -euo pipefail
USAGE_FROM=${BASH_SOURCE[0]}
KIND=ift
. "$(dirname "$USAGE_FROM")/self_rewarding_common.sh"
for name in DATA_PATH OUTPUT_DIR MODEL_PATH; do require "$name" "see the usage: bash $USAGE_FROM --help"; done
sr_setup "$@"
.venv/bin/python ift_data.py --config "$CONFIG" "${SETS[@]}" --data_path "$DATA_PATH" --model_name "$MODEL_PATH" \
  --output "$OUTPUT_DIR.ift.jsonl"
sr_train "$OUTPUT_DIR.ift.jsonl"
