# Rules every method shares: the baseline, stage 1 (samples) and the evaluation of an iteration's model.
# Included by the Makefile together with mk/$(METHOD).mk; the method file says how iter_NN/model.done is made.

# how iteration N's model is evaluated; a method may say otherwise (mk/distill.mk: its prompt variants)
eval_cmd = $(PY) evaluate.py $(ARGS) --iteration $(1)
# how iteration N's stage-1 samples are written; a method may say otherwise (mk/distill.mk: Track B's prompt)
samples_cmd = $(PY) create_data.py $(ARGS) --iteration $(1) --steps generate

$(RUN_DIR)/iter_00/eval.done: | setup $(CONFIG)
	$(call eval_cmd,0)

$(RUN_DIR)/iter_%/samples.done: $$(call generator_dep,$$*) | setup $(CONFIG)
	$(call samples_cmd,$(call num,$*))

$(RUN_DIR)/iter_%/judged.done: $(RUN_DIR)/iter_%/samples.done
	$(PY) judge.py $(ARGS) --iteration $(call num,$*)

$(RUN_DIR)/iter_%/eval.done: $(RUN_DIR)/iter_%/model.done
	$(call eval_cmd,$(call num,$*))
