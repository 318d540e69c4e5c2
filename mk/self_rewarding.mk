# method: self_rewarding (Self-Rewarding LMs, seed 004): the model judges itself and is trained with DPO on its own pairs
#   iteration 1 (M1):      ift_samples -> ift_judged -> ift  and  eft_samples -> eft_judged -> eft  (base model's
#                          replies, rule-checked) -> model (SFT of M0 on IFT + EFT)
#   iteration t >= 2 (Mt): samples (M_{t-1}'s candidates) -> judgements (M_{t-1} judges them) and judged (rule
#                          checks, for metrics only) -> pairs -> model (DPO from M_{t-1}, reference M_{t-1})
#                          with self_rewarding.self_instruct: self_instruct (M_{t-1} writes the prompts) first
#   every iteration N:     judge_eval (M_N judges the judge set M0 wrote for held-out prompts) before eval

# the judge of iteration N's judge_eval is iteration N's model (the base model for N=0)
sr_model_dep = $(if $(filter 00,$(1)),,$(RUN_DIR)/iter_$(1)/model.done)

$(RUN_DIR)/iter_01/ift.done: | setup $(CONFIG)
	$(PY) ift_data.py $(ARGS) --iteration 1

# after IFT: with self_rewarding.eft_from_ift the IFT stage's rule-checked replies are EFT examples too
$(RUN_DIR)/iter_01/eft.done: $(RUN_DIR)/iter_01/ift.done | setup $(CONFIG)
	$(PY) eft_data.py $(ARGS) --iteration 1

$(RUN_DIR)/iter_01/model.done: $(RUN_DIR)/iter_01/ift.done $(RUN_DIR)/iter_01/eft.done
	$(PY) train.py $(ARGS) --iteration 1 --train_stages ift,eft

$(RUN_DIR)/iter_%/judgements.done: $(RUN_DIR)/iter_%/samples.done
	$(PY) llm_judge.py $(ARGS) --iteration $(call num,$*)

$(RUN_DIR)/iter_%/pairs.done: $(RUN_DIR)/iter_%/judged.done $(RUN_DIR)/iter_%/judgements.done
	$(PY) pairs.py $(ARGS) --iteration $(call num,$*)

$(RUN_DIR)/iter_%/model.done: $(RUN_DIR)/iter_%/pairs.done
	$(PY) train_dpo.py $(ARGS) --iteration $(call num,$*)

$(RUN_DIR)/iter_00/judge_set.done: | setup $(CONFIG)
	$(PY) judge_eval.py $(ARGS) --iteration 0 --candidates

$(RUN_DIR)/iter_%/judge_eval.done: $(RUN_DIR)/iter_00/judge_set.done $$(call sr_model_dep,$$*)
	$(PY) judge_eval.py $(ARGS) --iteration $(call num,$*)

# each evaluation waits for its model's judge evaluation (self_rewarding.judge_eval_prompts: 0 turns it off)
ifneq ($(shell $(PY) -m selftrain.config $(CONFIG) self_rewarding.judge_eval_prompts),0)
$(foreach i,$(shell seq -f '%02g' 0 99),$(eval $(RUN_DIR)/iter_$(i)/eval.done: $(RUN_DIR)/iter_$(i)/judge_eval.done))
endif

# seed 004 step 1 (self_rewarding.self_instruct): M_{t-1} writes iteration t's prompts, which its samples take
$(RUN_DIR)/iter_%/self_instruct.done: $$(call generator_dep,$$*) | setup $(CONFIG)
	$(PY) self_instruct.py $(ARGS) --iteration $(call num,$*)

ifeq ($(shell $(PY) -m selftrain.config $(CONFIG) self_rewarding.self_instruct),True)
$(foreach i,$(shell seq -f '%02g' 2 99),$(eval $(RUN_DIR)/iter_$(i)/samples.done: $(RUN_DIR)/iter_$(i)/self_instruct.done))
endif
