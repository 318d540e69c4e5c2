# method: expert_iteration (ReST / Expert Iteration, seed 002): STaR without rationalization
#   samples -> judged -> train (select) -> model (SFT) -> eval

$(RUN_DIR)/iter_%/train.done: $(RUN_DIR)/iter_%/judged.done
	$(PY) select_data.py $(ARGS) --iteration $(call num,$*)

$(RUN_DIR)/iter_%/model.done: $(RUN_DIR)/iter_%/train.done
	$(PY) train.py $(ARGS) --iteration $(call num,$*)
