# method: iterative_dpo (online / iterative DPO with a reward, as in RLHFlow's and LMFlow's recipes): the
# Self-Rewarding loop with the judge replaced by reward_config (any seed-000 reward type)
#   iteration t >= 1 (Mt): samples (M_{t-1}'s candidates) -> judged (reward_config scores them) -> pairs (best vs
#                          worst reward per prompt) -> model (DPO from M_{t-1}, reference M_{t-1}) -> eval
#   iteration 0:           the base model's evaluation (mk/common.mk)

$(RUN_DIR)/iter_%/pairs.done: $(RUN_DIR)/iter_%/judged.done
	$(PY) pairs.py $(ARGS) --iteration $(call num,$*)

$(RUN_DIR)/iter_%/model.done: $(RUN_DIR)/iter_%/pairs.done
	$(PY) train_dpo.py $(ARGS) --iteration $(call num,$*)
