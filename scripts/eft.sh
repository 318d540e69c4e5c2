#!/bin/bash
# Seed 004, EFT: fine-tuning of MODEL_PATH on the judge examples in DATA_PATH; with IFT_DATA_PATH also set,
# on both at once, which is the paper's M1 (SFT on IFT + EFT).
#
#   export DATA_PATH=data/eft.json CONV_TEMPLATE=auto OUTPUT_DIR=saved_models/smollm2-eft MODEL_PATH=smollm2-135m
#   IFT_DATA_PATH=data/seed.json bash scripts/eft.sh
#
# DATA_PATH: JSON list or JSONL of {prompt, response, score (0..5)[, justification]}. Optional: IFT_DATA_PATH,
# CONFIG, LR, EPOCHS, TRAIN_BATCH_SIZE, GA. Rendered files go beside OUTPUT_DIR (<OUTPUT_DIR>.eft.jsonl).
set -euo pipefail
USAGE_FROM=${BASH_SOURCE[0]}
KIND=eft
. "$(dirname "$USAGE_FROM")/self_rewarding_common.sh"
for name in DATA_PATH OUTPUT_DIR MODEL_PATH; do require "$name" "see the usage: bash $USAGE_FROM --help"; done
sr_setup "$@"
files="$OUTPUT_DIR.eft.jsonl"
.venv/bin/python eft_data.py --config "$CONFIG" "${SETS[@]}" --data_path "$DATA_PATH" --model_name "$MODEL_PATH" \
  --output "$OUTPUT_DIR.eft.jsonl"
if [ -n "${IFT_DATA_PATH:-}" ]; then
  .venv/bin/python ift_data.py --config "$CONFIG" "${SETS[@]}" --data_path "$IFT_DATA_PATH" --model_name "$MODEL_PATH" \
    --output "$OUTPUT_DIR.ift.jsonl"
  files="$OUTPUT_DIR.ift.jsonl,$files"
fi
sr_train "$files"
