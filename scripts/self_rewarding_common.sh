# Shared by the seed-004 scripts (ift_data_prepare.sh, ift.sh, eft_data_prepare.sh, eft.sh). Sourced, not run.
# Settings come from the environment, as in the seed: `export DATA_PATH=...; bash scripts/ift.sh`.
. "$(dirname "${BASH_SOURCE[0]}")/../slurm/common.sh"  # require, usage
case "${1:-}" in -h|--help) usage; exit 0 ;; esac  # a sourced file sees the script's own arguments

sr_setup() {  # the repository root, the venv, the config and the prompt format (CONV_TEMPLATE)
  cd "$(dirname "$USAGE_FROM")/.."
  [ -x .venv/bin/python ] || make --no-print-directory setup
  CONFIG=${CONFIG:-configs/self_rewarding.yaml}
  [ -f "$CONFIG" ] || { echo "$(basename "$USAGE_FROM"): CONFIG=$CONFIG does not exist" >&2; exit 2; }
  SETS=()
  # CONV_TEMPLATE: the chat template prompts are rendered with. selftrain renders every prompt with the
  # tokenizer's own template (auto), so training, judging and evaluation share one format; or none (plain).
  case "${CONV_TEMPLATE:-auto}" in
    auto|default|tokenizer) ;;
    plain|none) SETS+=(--set use_chat_template=false) ;;
    *) echo "$(basename "$USAGE_FROM"): note: CONV_TEMPLATE=$CONV_TEMPLATE: prompts are rendered with the chat" \
            "template of MODEL_PATH's own tokenizer (what a model was tuned with, and what generation, judging" \
            "and evaluation use too); CONV_TEMPLATE=plain renders without one" >&2 ;;
  esac
  [ -z "${N_PROMPTS:-}" ] || SETS+=(--set "self_rewarding.${KIND}_prompts=$N_PROMPTS")
  [ -z "${N_SAMPLES:-}" ] || SETS+=(--set "self_rewarding.${KIND}_samples=$N_SAMPLES")
  [ -z "${LR:-}" ] || SETS+=(--set "learning_rate=$LR")
  [ -z "${EPOCHS:-}" ] || SETS+=(--set "num_train_epochs=$EPOCHS")
  [ -z "${TRAIN_BATCH_SIZE:-}" ] || SETS+=(--set "train_batch_size=$TRAIN_BATCH_SIZE")
  [ -z "${GA:-}" ] || SETS+=(--set "gradient_accumulation_steps=$GA")
  echo "[$(date -Is)] $(basename "$USAGE_FROM"): CONFIG=$CONFIG MODEL_PATH=${MODEL_PATH:-} ${SETS[*]}"
}

sr_train() {  # sr_train TRAIN_FILES: SFT of MODEL_PATH on the files (comma-separated) into OUTPUT_DIR
  .venv/bin/python train.py --config "$CONFIG" "${SETS[@]}" --train_file "$1" --base_model "$MODEL_PATH" \
    --output_dir "$OUTPUT_DIR"
}
