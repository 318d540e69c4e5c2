# method: distill (teacher chain-of-thought distillation, seed 003), one phase per iteration:
#   iteration 0:            drafts (the base student drafts the training, [dev,] and test questions) -> eval (Track A's prompt)
#   the trained teacher:    with distill.teacher_model 'trained', $(RUN_DIR)/teacher/iter_01: teacher_data (the dev
#                           drafts -> the seed's teacher format from each question's facts) -> model (SFT of M0)
#   iteration 1, Track A:   teacher (its reply to every training draft) -> validated (parsed, checked, balanced)
#                           -> track_a (question -> Yes/No) -> model (SFT of M0) -> eval (a)
#   iteration 2, Track B:   track_b (question + draft -> the teacher's reasoning) -> model (SFT from Track A's model)
#                           -> eval (b) with the ablations eval_no_draft and eval_shuffled
#   iteration 3, Phase C:   pairs (chosen = the teacher's reply, rejected = a wrong draft) -> model (DPO from Track B's
#                           model, dpo.schedule) -> eval (b, no_draft, shuffled)

TEACHER_DIR := $(RUN_DIR)/teacher
# the run's own teacher, when the config asks for one
distill_teacher = $(if $(filter trained,$(shell $(PY) -m selftrain.config $(CONFIG) distill.teacher_model)),$(TEACHER_DIR)/iter_01/model.done)
distill_variants = $(if $(filter 0 1,$(1)),a,b,no_draft,shuffled)
eval_cmd = $(PY) distill_eval.py $(ARGS) --iteration $(1) --variants $(call distill_variants,$(1))

$(RUN_DIR)/iter_00/drafts.done: | setup $(CONFIG)
	$(PY) drafts.py $(ARGS) --iteration 0

$(RUN_DIR)/iter_00/eval.done: $(RUN_DIR)/iter_00/drafts.done

$(TEACHER_DIR)/iter_01/teacher_data.done: $(RUN_DIR)/iter_00/drafts.done
	$(PY) distill_data.py --config $(CONFIG) --run_dir $(TEACHER_DIR) --iteration 1 --kind teacher_data --drafts $(RUN_DIR)

$(TEACHER_DIR)/iter_01/model.done: $(TEACHER_DIR)/iter_01/teacher_data.done
	$(PY) train.py --config $(CONFIG) --run_dir $(TEACHER_DIR) --iteration 1 --train_stages teacher_data \
	  --epochs $(shell $(PY) -m selftrain.config $(CONFIG) distill.teacher_train_epochs)

$(RUN_DIR)/iter_01/teacher.done: $(RUN_DIR)/iter_00/drafts.done $$(distill_teacher)
	$(PY) teacher.py $(ARGS) --iteration 1
	@test -f $@ || { echo "error: teacher.py sent nothing (distill.dry_run / DRY_RUN): the chain stops here" >&2; exit 2; }

$(RUN_DIR)/iter_01/validated.done: $(RUN_DIR)/iter_01/teacher.done
	$(PY) distill_data.py $(ARGS) --iteration 1 --kind validated

$(RUN_DIR)/iter_01/track_a.done: $(RUN_DIR)/iter_01/validated.done
	$(PY) distill_data.py $(ARGS) --iteration 1 --kind track_a

$(RUN_DIR)/iter_01/model.done: $(RUN_DIR)/iter_01/track_a.done
	$(PY) train.py $(ARGS) --iteration 1 --train_stages track_a --init base

$(RUN_DIR)/iter_02/track_b.done: $(RUN_DIR)/iter_01/validated.done
	$(PY) distill_data.py $(ARGS) --iteration 2 --kind track_b

$(RUN_DIR)/iter_02/model.done: $(RUN_DIR)/iter_02/track_b.done $(RUN_DIR)/iter_01/model.done
	$(PY) train.py $(ARGS) --iteration 2 --train_stages track_b --init previous

$(RUN_DIR)/iter_03/pairs.done: $(RUN_DIR)/iter_01/validated.done
	$(PY) distill_data.py $(ARGS) --iteration 3 --kind pairs

$(RUN_DIR)/iter_03/model.done: $(RUN_DIR)/iter_03/pairs.done $(RUN_DIR)/iter_02/model.done
	$(PY) train_dpo.py $(ARGS) --iteration 3
