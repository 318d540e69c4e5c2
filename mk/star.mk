# method: star (STaR, seed 001): samples -> judged -> rationales -> train (select) -> model (SFT) -> eval

$(RUN_DIR)/iter_%/rationales.done: $(RUN_DIR)/iter_%/judged.done
	$(PY) rationalize.py $(ARGS) --iteration $(call num,$*)

$(RUN_DIR)/iter_%/train.done: $(RUN_DIR)/iter_%/rationales.done
	$(PY) select_data.py $(ARGS) --iteration $(call num,$*)

$(RUN_DIR)/iter_%/model.done: $(RUN_DIR)/iter_%/train.done
	$(PY) train.py $(ARGS) --iteration $(call num,$*)
