# method: distill (teacher chain-of-thought distillation, seed 003), one phase per iteration:
#   iteration 0:            drafts (the base student drafts the training, [dev,] and test questions) -> eval
#   the trained teacher:    with distill.teacher_model 'trained', $(RUN_DIR)/teacher/iter_01: teacher_data (the dev
#                           drafts -> the seed's teacher format from each question's facts) -> model (SFT of M0)
#   iteration 1, Track A:   teacher (its reply to every training draft) -> validated (parsed, checked, the targets
#                           built reasoning first, balanced) -> track_a (question -> Yes/No) -> model (SFT of M0) -> eval
#   iteration 2, Track B:   track_b (question + draft -> the teacher's reasoning, then its verdict) -> model (SFT from
#                           Track A's model) -> eval
#   iteration t >= 3:       Phase C round t (num_rounds 3: one round, 4: two, ...): samples (M_{t-1} on Track B's
#                           prompt, distill.policy_samples per question) -> judged (the yesno reward) -> pairs (a
#                           correct vs a wrong sample per question, [draft / flipped pairs]) -> model (DPO from
#                           M_{t-1}, reference M_{t-1}, dpo.schedule) -> eval
#   every model is evaluated on every prompt variant: its main `eval` is the prompt it was trained on (a: the question
#   for the base and Track A, b: question + draft from Track B on), eval_<variant> the others (a, b, no_draft, shuffled)

TEACHER_DIR := $(RUN_DIR)/teacher
# the run's own teacher, when the config asks for one
distill_teacher = $(if $(filter trained,$(shell $(PY) -m selftrain.config $(CONFIG) distill.teacher_model)),$(TEACHER_DIR)/iter_01/model.done)
comma := ,
distill_variants = $(if $(filter 0 1,$(1)),a$(comma)b$(comma)no_draft$(comma)shuffled,b$(comma)no_draft$(comma)shuffled$(comma)a)
eval_cmd = $(PY) distill_eval.py $(ARGS) --iteration $(1) --variants $(call distill_variants,$(1))
# a round's pairs need its judged samples when distill.on_policy_pairs is on
distill_judged = $(if $(filter True,$(shell $(PY) -m selftrain.config $(CONFIG) distill.on_policy_pairs)),$(RUN_DIR)/iter_$(1)/judged.done)

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

# Phase C round t: samples (mk/common.mk's rule with the command below: M_{t-1} on Track B's prompt)
samples_cmd = $(PY) distill_samples.py $(ARGS) --iteration $(1)

# judged: mk/common.mk (judge.py scores the samples with reward_config, the yesno reward)

$(RUN_DIR)/iter_%/pairs.done: $(RUN_DIR)/iter_01/validated.done $$(call distill_judged,$$*)
	$(PY) distill_data.py $(ARGS) --iteration $(call num,$*) --kind pairs

$(RUN_DIR)/iter_%/model.done: $(RUN_DIR)/iter_%/pairs.done $$(call generator_dep,$$*)
	$(PY) train_dpo.py $(ARGS) --iteration $(call num,$*)

# seed 003's validation experiments (make distill-checks): the integrated-gradients share of a model's verdict
# on its draft's tokens, and the question-quality win-rate of a model's clarifying questions over the base
# student's, judged by the teacher in both orders
$(RUN_DIR)/iter_%/attribution.done: $(RUN_DIR)/iter_%/eval.done
	$(PY) attribution.py $(ARGS) --iteration $(call num,$*)

$(RUN_DIR)/iter_%/question_quality.done: $(RUN_DIR)/iter_%/model.done $(RUN_DIR)/iter_00/drafts.done $$(distill_teacher)
	$(PY) question_quality.py $(ARGS) --iteration $(call num,$*)
