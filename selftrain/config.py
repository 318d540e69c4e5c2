"""The run configuration: seed-000 keys plus the STaR recipe, validated once.

Precedence: defaults < config file (YAML or JSON) < (method distill: the seed-003 `.env` names in the
environment, DISTILL_ENV) < command-line flags. Unknown
keys and bad values stop the stage with a message naming the file and key.
Each section validates itself; combinations that cannot run on this machine
or with this reward are refused by `selftrain.checks.check_runnable`.
Each key's help is the comment on its line (or the lines above it): docs/configuration.md is generated
from them (`make docs`, selftrain/config_doc.py).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from selftrain.errors import InputError, exit_code
from selftrain.records import DIFFICULTIES

REWARD_TYPES = ("local", "api", "script", "rule_based")
RULE_TYPES = ("math", "code", "json", "regex", "ifeval", "yesno")
SELECTION_STRATEGIES = ("sequential", "difficulty_curriculum", "round_robin", "random_weighted")
FILTER_STRATEGIES = ("correct", "top_k_percent", "threshold", "best_of_n", "none")
TRAINING_METHODS = ("lora", "full", "qlora")
YESNO_LEVELS = ("mixed", "sums")  # task.level of yesno, the default first (their shapes: selftrain/tasks/yesno.py)
METHODS = ("star", "expert_iteration", "self_rewarding", "distill", "iterative_dpo")  # one mk/<method>.mk each
TASKS = ("arithmetic", "ifeval", "yesno")  # built-in seeded tasks (selftrain/tasks/)
# auto: the fastest measured path for this machine and stage (selftrain/generation/choose.py)
GENERATION_BACKENDS = ("auto", "selftrain", "selftrain_int8", "hf", "llama_cpp", "openai")
GGUF_TYPES = ("q8_0", "f16", "bf16", "f32")  # what checkpoints are exported to for llama.cpp (generation.gguf_type)
SERVER_KINDS = ("llama_cpp", "vllm")  # servers a stage can launch (generation.server)
MOVED = {"generation_engine": "generation.backend"}  # keys of earlier releases, and where they went
# report_to: the trackers of transformers' integrations that selftrain also logs each iteration's round metrics to
# (selftrain/tracking.py); "none" (alone): no tracker, the offline default
TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")

JUDGE_SCORING = ("sampled", "expected")  # how a judgement becomes a score (self_rewarding.judge_scoring)
JUDGE_JUSTIFICATION = ("first", "after", "none")
EFT_BALANCE = ("score", "prompt")
BALANCE_KEYS = ("", "answer", "category", "difficulty", "dataset")
BALANCE_METHODS = ("downsample", "upsample")


def _bad(where: str, key: str, message: str) -> InputError:
    return InputError(f"{where}: {key}: {message}")


def _one_of(where: str, key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _bad(where, key, f"{value!r} is not one of {', '.join(allowed)}")


@dataclass
class TaskConfig:
    """A built-in task generated in memory from a seed: arithmetic (STaR's), ifeval (instructions whose
    compliance a program checks; its IFT, EFT and judge-eval splits are sized in `self_rewarding`) or
    yesno (StrategyQA-like yes/no questions with an implicit step, balanced 50/50; distillation's)."""

    name: str = "arithmetic"  # arithmetic | ifeval | yesno
    difficulties: list[str] = field(default_factory=lambda: ["easy"])  # arithmetic: the levels drawn, in turn
    n_train: int = 1000  # training prompts (ifeval: the iterations' pool; yesno: the train split)
    n_test: int = 200  # held-out evaluation prompts, disjoint from every other split
    n_dev: int = 0  # yesno only: a dev split, disjoint from train and test
    level: str = YESNO_LEVELS[0]  # yesno only: its question shapes, mixed (the harder twelve) or sums (two-digit)
    seed: int = 0  # the generator's seed: the same seed and sizes give the same prompts

    def validate(self, where: str) -> None:
        for i, level in enumerate(self.difficulties):
            _one_of(where, f"task.difficulties[{i}]", level, DIFFICULTIES)
        _one_of(where, "task.name", self.name, TASKS)
        if self.n_train < 1 or self.n_test < 1:
            raise _bad(where, "task.n_train/n_test", "must be >= 1")
        if self.n_dev < 0:
            raise _bad(where, "task.n_dev", f"{self.n_dev} must be >= 0")
        _one_of(where, "task.level", self.level, tuple(YESNO_LEVELS))
        if self.level != YESNO_LEVELS[0] and self.name != "yesno":
            raise _bad(where, "task.level", f"{self.level!r}: only the yesno task has levels (task.name: {self.name})")


@dataclass
class DatasetConfig:
    path: str = ""  # a JSONL / JSON file, a folder of <split>.jsonl, or a hub id (required)
    name: str = ""  # the name its records carry as `dataset` (metrics, balance_by); empty: the file's stem
    difficulty: str = ""  # given to this dataset's records that carry none (easy | medium | hard | expert)
    weight: float = 1.0  # random_weighted: this dataset's relative share of the draws
    format: str = "auto"  # auto | seed000 | gsm8k
    split: str = "train"  # for hub ids

    def validate(self, where: str, i: int) -> None:
        if not self.path:
            raise _bad(where, f"datasets[{i}].path", "missing")
        if self.difficulty:
            _one_of(where, f"datasets[{i}].difficulty", self.difficulty, DIFFICULTIES)
        _one_of(where, f"datasets[{i}].format", self.format, ("auto", "seed000", "gsm8k"))
        if self.weight <= 0:
            raise _bad(where, f"datasets[{i}].weight", f"{self.weight} must be > 0")


@dataclass
class RewardConfig:
    """`reward_config` of seed 000, plus the knobs each reward type needs (docs/data-and-rewards.md)."""

    type: str = "rule_based"  # local | api | script | rule_based
    rule_type: str = "math"  # rule_based: math | code | json | regex | ifeval | yesno
    # rule_based / code: sandboxed Python run once per test case
    code_timeout: float = 5.0  # code: wall-clock seconds per test case
    code_memory_mb: int = 512  # code: address-space limit per run
    code_max_output_kb: int = 64  # code: stdout kept per run; more is an error (scored as failed)
    code_workers: int = 2  # code: test cases run in parallel (processes)
    # rule_based / json: optional JSON schema (a mapping here, or metadata.json_schema per record)
    json_schema: dict = field(default_factory=dict)
    # rule_based / regex: pattern (or metadata.regex_pattern per record); search anywhere or fullmatch
    regex_pattern: str = ""
    regex_mode: str = "search"  # search | fullmatch
    # local: Hugging Face sequence-classification reward model
    model_path: str = "OpenAssistant/reward-model-deberta-v3-large-v2"
    reward_batch_size: int = 16  # local: prompt + response pairs scored per forward pass
    reward_max_length: int = 512  # local: tokens of prompt + response; longer inputs lose the prompt's start first
    # api: POST {"items": [{prompt, response}]} -> {"scores": [...]}
    api_endpoint: str = ""  # api: the scoring service's URL
    api_key: str = ""  # api: the key (or api_key_env's variable); never written anywhere
    api_key_env: str = "SELFTRAIN_REWARD_API_KEY"  # api: environment variable read for the key when api_key is empty
    api_timeout: float = 30.0  # api: seconds per request
    api_batch_size: int = 10  # api: items per request
    api_max_retries: int = 5  # api: retries on timeouts, connection errors, 429 and 5xx, with backoff
    # script: the seed's custom-script contract (--input, --output, --function)
    script_path: str = ""  # script: the scorer, run as python SCRIPT --input IN --output OUT --function F
    script_function: str = "score"  # script: the value of --function
    script_timeout: float = 3600.0  # script: seconds the whole run may take

    def validate(self, where: str) -> None:
        _one_of(where, "reward_config.type", self.type, REWARD_TYPES)
        if self.type == "rule_based":
            _one_of(where, "reward_config.rule_type", self.rule_type, RULE_TYPES)
        _one_of(where, "reward_config.regex_mode", self.regex_mode, ("search", "fullmatch"))
        for key in ("code_timeout", "code_memory_mb", "code_max_output_kb", "code_workers", "reward_batch_size",
                    "reward_max_length", "api_timeout", "api_batch_size", "script_timeout"):
            if getattr(self, key) <= 0:
                raise _bad(where, f"reward_config.{key}", f"{getattr(self, key)} must be > 0")
        if self.api_max_retries < 0:
            raise _bad(where, "reward_config.api_max_retries", f"{self.api_max_retries} must be >= 0")


@dataclass
class GenerationConfig:
    """`generation:` who writes the replies (docs/backends-and-speed.md)."""

    # auto | selftrain (in-house engine) | selftrain_int8 (the engine on int8 linear layers) |
    # hf (model.generate) | llama_cpp (llama.cpp in this process, on the model's GGUF) | openai (a server)
    backend: str = "auto"
    # llama.cpp (backend llama_cpp, server llama_cpp): a trained checkpoint is exported to this GGUF type on
    # first use, cached beside it; the embedded model runs its own shipped Q4_1 file
    gguf_type: str = "q8_0"  # q8_0 | f16 | bf16 | f32
    # openai: any OpenAI-compatible server
    base_url: str = ""  # e.g. http://127.0.0.1:8000/v1; empty with `server` set: the launched server
    model: str = ""  # the name the server knows the model by; empty: the stage's model (what it serves)
    api: str = "completions"  # completions: the rendered prompt (server serves the student's weights) | chat: messages
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the key; the key itself is never in a config
    max_concurrency: int = 8  # requests in flight
    timeout: float = 120.0  # seconds per request
    max_retries: int = 5  # the openai client's own retries with backoff (429, 5xx, timeouts, connection errors)
    extra_body: dict = field(default_factory=dict)  # fields added to every request, e.g. {min_p: 0} for llama.cpp
    use_n: str = "auto"  # auto: ask for N choices with `n`, fall back to N seeded requests if fewer come | never
    # a server the stage launches for its own model, on a free loopback port, stopped when the stage ends
    server: str = ""  # "" (use base_url) | llama_cpp | vllm
    server_python: str = ""  # interpreter of the server's environment (vllm default: .venv-vllm/bin/python)
    server_args: list[str] = field(default_factory=list)  # extra command-line arguments for the server
    server_startup_timeout: float = 900.0  # seconds to wait until it answers

    def validate(self, where: str, section: str = "generation") -> None:
        def bad(key: str, message: str) -> InputError:
            return InputError(f"{where}: {section}.{key}: {message}")

        for key, allowed in (("backend", GENERATION_BACKENDS), ("api", ("completions", "chat")),
                             ("use_n", ("auto", "never")), ("server", ("",) + SERVER_KINDS),
                             ("gguf_type", GGUF_TYPES)):
            if getattr(self, key) not in allowed:
                raise bad(key, f"{getattr(self, key)!r} is not one of {', '.join(repr(a) if not a else a for a in allowed)}")
        if self.max_concurrency < 1:
            raise bad("max_concurrency", f"{self.max_concurrency} must be >= 1")
        if self.max_retries < 0:
            raise bad("max_retries", f"{self.max_retries} must be >= 0")
        for key in ("timeout", "server_startup_timeout"):
            if getattr(self, key) <= 0:
                raise bad(key, f"{getattr(self, key)} must be > 0")
        if self.backend == "openai" and not self.server and not self.base_url:
            raise bad("base_url", f"missing: the openai backend needs the server's URL (or {section}.server to launch one)")
        if self.server and self.backend != "openai":
            raise bad("server", f"{self.server!r} is driven through the openai backend: set {section}.backend: openai")
        if self.server and self.base_url:
            raise bad("base_url", "give either base_url (a running server) or server (one the stage launches), not both")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise bad("base_url", f"{self.base_url!r} is not an http(s) URL")


DPO_LOSSES = ("sigmoid", "cal_dpo", "dr_dpo", "batch_centred")  # selftrain's own (selftrain/dpo_losses.py LOSSES)


def trl_dpo_loss_types() -> tuple[str, ...]:
    """The loss types TRL's DPOTrainer implements, read from its installed source: TRL keeps no list of
    them to import (only the `if loss_type == "..."` branches of DPOTrainer._compute_loss and a help
    text), and reading the file costs a millisecond where importing trl costs seconds. () without trl."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("trl")  # finds the package without importing it
    source = Path(spec.origin).parent / "trainer" / "dpo_trainer.py" if spec and spec.origin else None
    if source is None or not source.is_file():
        return ()
    return tuple(dict.fromkeys(re.findall(r'loss_type == "(\w+)"', source.read_text(encoding="utf-8"))))


@dataclass
class DPOSection:
    """`dpo:` preference training (train_dpo.py) from the init model, which is also the reference (LoRA:
    the init model with the adapter switched off). Epochs, batch and learning rate are DPO's own; the scheduler,
    warmup, optimizer, LoRA shape, dtype and seed are the top-level training keys. `schedule`: phases trained
    one after the other, each against the same reference (seed 003's Phase C:
    [{epochs: 1, beta: 0.05, loss_type: sigmoid}, {epochs: 2, beta: 0.1, loss_type: batch_centred},
     {epochs: 1, beta: 0.1, loss_type: sigmoid, trim: 0.15}]); empty: one phase of loss_type, beta and
    num_train_epochs, which a schedule replaces."""

    @dataclass
    class Phase:
        """One phase of `dpo.schedule`. trim: before the phase, the share of the whole pair set with the
        highest DPO loss under the current policy is dropped for this phase (floor(trim * pairs))."""

        epochs: float = 0.0  # this phase's epochs (required: the 0.0 / "" defaults mean not given)
        beta: float = 0.0  # this phase's DPO beta (required)
        loss_type: str = ""  # this phase's loss, any value dpo.loss_type takes (required)
        trim: float = 0.0  # share in [0, 1) of the highest-loss pairs left out of this phase

    # sigmoid (DPO) | cal_dpo | dr_dpo | batch_centred (selftrain/dpo_losses.py), or a loss type of TRL's DPOTrainer
    loss_type: str = "sigmoid"
    beta: float = 0.1  # DPO's KL strength; Cal-DPO's targets are +-1/(2 beta) nats of log-ratio
    cal_weight: float = 1.0  # Cal-DPO's calibration weight: 1 = the paper and Cal-DPO org code (tengxiao1: 0.5)
    dr_beta: float = 1.0  # Dr-DPO's beta': large -> DPO's mean, small -> down-weights high-loss (noisy) pairs
    centre_ema: float = 0.0  # batch_centred: gamma of a running mean margin (beta-DPO's 0.9); 0: the batch's own
    learning_rate: float = 5e-5  # DPO's rate, a LoRA rate (the papers' 5e-7..1e-6 are for full fine-tuning)
    num_train_epochs: float = 1.0  # DPO epochs: one pass over the round's own pairs (Cal-DPO's zephyr recipe)
    train_batch_size: int = 4  # pairs per device step (Dr-DPO aggregates over this micro-batch)
    gradient_accumulation_steps: int = 1  # pair micro-batches per optimizer step
    max_length: int = 1024  # tokens of prompt + completion; longer pairs are skipped (cutting would drop the EOS)
    label_smoothing: float = 0.0  # TRL's robust (rDPO, < 0.5) and exo_pair (> 0, needed) take it; ours ignore it
    schedule: list[Phase] = field(default_factory=list)  # the phases, in order; empty: one phase (above)

    def phases(self) -> list[Phase]:
        """The schedule, or its one phase made of loss_type, beta and num_train_epochs."""
        return list(self.schedule) or [self.Phase(self.num_train_epochs, self.beta, self.loss_type)]

    def validate(self, where: str) -> None:
        def bad(key: str, message: str) -> InputError:
            return InputError(f"{where}: dpo.{key}: {message}")

        def check_loss(key: str, loss_type: str) -> None:
            allowed = DPO_LOSSES
            if loss_type not in allowed:
                allowed += tuple(t for t in trl_dpo_loss_types() if t not in allowed)
                if loss_type not in allowed:
                    raise bad(key, f"{loss_type!r} is not one of {', '.join(allowed)}")

        check_loss("loss_type", self.loss_type)
        for i, phase in enumerate(self.schedule):
            given = "each phase gives its own epochs, beta and loss_type"
            if not phase.loss_type:
                raise bad(f"schedule[{i}].loss_type", f"missing ({given})")
            check_loss(f"schedule[{i}].loss_type", phase.loss_type)
            for key in ("epochs", "beta"):
                if getattr(phase, key) <= 0:
                    raise bad(f"schedule[{i}].{key}", f"{getattr(phase, key)} must be > 0 ({given})")
            if not 0 <= phase.trim < 1:
                raise bad(f"schedule[{i}].trim", f"{phase.trim} must be in [0, 1)")
        for key in ("beta", "dr_beta", "learning_rate", "num_train_epochs"):
            if getattr(self, key) <= 0:
                raise bad(key, f"{getattr(self, key)} must be > 0")
        if self.cal_weight < 0:
            raise bad("cal_weight", f"{self.cal_weight} must be >= 0")
        for key in ("train_batch_size", "gradient_accumulation_steps"):
            if getattr(self, key) < 1:
                raise bad(key, f"{getattr(self, key)} must be >= 1")
        if not 0 <= self.centre_ema < 1:
            raise bad("centre_ema", f"{self.centre_ema} must be in [0, 1)")
        if not 0 <= self.label_smoothing < 0.5:
            raise bad("label_smoothing", f"{self.label_smoothing} must be in [0, 0.5)")
        if "exo_pair" in (phase.loss_type for phase in self.phases()) and self.label_smoothing == 0:
            raise bad("label_smoothing", "exo_pair needs it > 0 (the EXO paper uses 1e-3)")
        if self.max_length < 2:
            raise bad("max_length", f"{self.max_length} must be >= 2 (a prompt token and a completion token)")


@dataclass
class SelfRewardingConfig:
    """`self_rewarding:` the Self-Rewarding loop (seed 004; docs/methods/self-rewarding.md). Iteration 1 trains
    M1 by SFT on IFT + EFT data; iteration t >= 2 samples candidates with M_{t-1} (the top-level
    num_generations_per_prompt, temperature, top_p; prompts: samples_per_round of the pool), has
    M_{t-1} judge them, and trains M_t by DPO (`dpo:`) on its own preference pairs."""

    # IFT: instruction -> response pairs
    ift_file: str = ""  # prompt/response or messages JSONL; empty: the base model's replies that pass every check
    ift_prompts: int = 200  # built-in task: prompts of the IFT split
    ift_samples: int = 4  # replies per IFT prompt (rejection sampling with the ifeval reward)
    # EFT: LLM-as-a-judge examples (the rubric prompt -> a justification ending with "Score: N")
    eft_file: str = ""  # {prompt, response, score[, justification]} JSONL; empty: built from rule checks
    eft_prompts: int = 100  # built-in task: prompts of the EFT split
    eft_samples: int = 4  # replies per EFT prompt, each one judged by the rule checks
    eft_max_per_score: int = 0  # cap per score 0..5 (balance); 0: the median size of the non-empty scores
    # score: balance over scores 0..5 (eft_max_per_score), prompts apart; prompt: every reply kept, a prompt's
    # replies together (same-prompt contrasts: the judge must read the reply, not the instruction type)
    eft_balance: str = "score"
    eft_from_ift: bool = False  # the IFT stage's rule-checked replies are EFT examples too (no extra generation)
    # replies cut off at the token limit kept per prompt as EFT examples: -1 every one; 0 none, so the judge
    # learns to rank finished replies (a round never chooses a cut-off one; docs/methods/self-rewarding.md); N at most N
    eft_max_cut_off: int = -1
    eft_repeats: int = 1  # each EFT example this many times in M1's training file (EFT epochs within one SFT)
    # Self-Instruct (paper §3.1.2): iteration t >= 2's prompts written by M_{t-1}, few-shot from seed prompts,
    # unusable and near-duplicate requests dropped, the ifeval task's instructions attached (selftrain/self_instruct.py)
    self_instruct: bool = False  # true: iterations t >= 2 take prompts M_{t-1} writes; false: the pool's
    self_instruct_file: str = ""  # seed prompts, JSONL with a `prompt` per line; empty: the task's IFT split
    self_instruct_shots: int = 4  # seed requests shown per request (paper: 8; 4 keeps a 135M model's prompt short)
    self_instruct_prompts: int = 0  # requests written per iteration; 0: as many as the round takes (samples_per_round)
    # the judge: M_{t-1} with the additive 5-point rubric (paper: 3 samples at T 0.7, top-p 0.9)
    judge_template: str = ""  # a file with {prompt} and {response}; empty: the paper's rubric (judging.py)
    judge_samples: int = 3  # judgements per candidate; its score is the mean of the parsed ones
    judge_temperature: float = 0.7  # sampling temperature of the judgements (paper: 0.7)
    judge_top_p: float = 0.9  # top-p of the judgements (paper: 0.9)
    judge_max_new_tokens: int = 160  # "up to 100 words" of justification, then the score line
    # sampled: judge_samples sampled judgements, each parsed for "Score: N", averaged (the paper);
    # expected: the probability-weighted mean of the score tokens 0..5 after "Score:" (G-Eval), one greedy pass
    judge_scoring: str = "sampled"
    # where the judge writes its checks: first (then "Score: N"; the paper), after ("Score: N" opens the
    # judgement: with expected scoring one forward pass per candidate), none ("Score: N" alone)
    judge_justification: str = "first"
    # pairs: highest vs lowest mean score per prompt; ties dropped and counted
    length_control: float = 0.0  # rho in [0, 1]: shortest among near-top, longest among near-bottom (NeMo)
    # judge accuracy against the rule-checked truth, on candidate sets M0 wrote for held-out prompts
    judge_eval_prompts: int = 25  # built-in task: prompts of the judge-eval split (0: no judge evaluation)
    judge_eval_samples: int = 1  # judgements per judge-set candidate, sampled like the loop's (each costs a long prompt)

    def validate(self, where: str) -> None:
        def bad(key: str, message: str) -> InputError:
            return InputError(f"{where}: self_rewarding.{key}: {message}")

        for key in ("ift_samples", "eft_samples", "judge_samples", "judge_eval_samples", "judge_max_new_tokens"):
            if getattr(self, key) < 1:
                raise bad(key, f"{getattr(self, key)} must be >= 1")
        for key in ("ift_prompts", "eft_prompts", "eft_max_per_score", "judge_eval_prompts"):
            if getattr(self, key) < 0:
                raise bad(key, f"{getattr(self, key)} must be >= 0")
        if self.judge_temperature < 0:
            raise bad("judge_temperature", f"{self.judge_temperature} must be >= 0")
        if not 0 < self.judge_top_p <= 1:
            raise bad("judge_top_p", f"{self.judge_top_p} must be in (0, 1]")
        if not 0 <= self.length_control <= 1:
            raise bad("length_control", f"{self.length_control} must be in [0, 1]")
        for key, allowed in (("judge_scoring", JUDGE_SCORING), ("judge_justification", JUDGE_JUSTIFICATION),
                             ("eft_balance", EFT_BALANCE)):
            _one_of(where, f"self_rewarding.{key}", getattr(self, key), allowed)
        if self.eft_max_cut_off < -1:
            raise bad("eft_max_cut_off", f"{self.eft_max_cut_off} must be >= -1 (-1: every cut-off reply)")
        if self.eft_repeats < 1:
            raise bad("eft_repeats", f"{self.eft_repeats} must be >= 1")
        if self.self_instruct_shots < 1:
            raise bad("self_instruct_shots", f"{self.self_instruct_shots} must be >= 1")
        if self.self_instruct_prompts < 0:
            raise bad("self_instruct_prompts", f"{self.self_instruct_prompts} must be >= 0 (0: samples_per_round)")


@dataclass
class IterativeDPOConfig:
    """`iterative_dpo:` online (iterative) DPO with a reward (docs/methods/iterative-dpo.md): Self-Rewarding's loop
    with the judge replaced by `reward_config`. Iteration t samples candidates with M_{t-1} (the top-level
    num_generations_per_prompt, temperature, top_p; samples_per_round prompts of the pool), scores them with
    the reward (judge.py), pairs the best and the worst reply per prompt and trains M_t by DPO (`dpo:`) from
    M_{t-1}, which is also the reference."""

    length_control: float = 0.0  # rho in [0, 1]: shortest among near-top, longest among near-bottom (NeMo)

    def validate(self, where: str) -> None:
        if not 0 <= self.length_control <= 1:
            raise _bad(where, "iterative_dpo.length_control", f"{self.length_control} must be in [0, 1]")


# distill.draft_analysis: where a student target puts the teacher's teaching analysis (selftrain/distill.py)
DRAFT_ANALYSIS = ("drop", "after", "first")


@dataclass
class DistillConfig:
    """`distill:` teacher chain-of-thought distillation (seed 003; docs/methods/distill.md): the student drafts,
    a teacher reasons about each draft, Track A / Track B SFT, Phase C DPO (`dpo:`, its `schedule`)."""

    # StrategyQA: a folder of <split>.jsonl|.json, or one file / hub id carved into disjoint test, dev and
    # train splits of task.n_test, n_dev, n_train (seeded); empty: the built-in task yesno
    dataset: str = ""
    train_samples: int = 200  # training questions drafted and sent to the teacher (0: all)
    draft_max_new_tokens: int = 64  # reply limit of a draft (MAX_NEW_TOKENS; the draft is two short lines)
    draft_temperature: float = 0.0  # drafts of train and test questions alike (0: greedy)
    draft_shots: int = 0  # worked drafts of dev questions shown before each draft prompt, yes/no alternating (0: none)
    # the teacher: a local checkpoint or hub id (local backends), the name a server knows (openai), or
    # "trained": a teacher this run trains first on the reasoning of held-apart questions (the offline demo)
    teacher_model: str = ""
    teacher_generation: GenerationConfig = field(default_factory=GenerationConfig)  # the teacher's own generation section
    teacher_system_prompt: str = "You are a patient, exact teacher."  # the system turn of every teacher request
    teacher_sees_facts: bool = False  # the question's facts (StrategyQA's `facts`) in the teacher's prompt
    teacher_max_tokens: int = 150  # reply limit of a teacher request, in the teacher's tokens (GPT4_MAX_TOKENS)
    teacher_temperature: float = 0.3  # sampling temperature of the teacher (GPT4_TEMPERATURE)
    teacher_requires_key: str = "auto"  # auto: a key unless the server is on loopback | always | never
    price_input_per_mtok: float = 0.0  # teacher price per million prompt tokens (the estimated cost)
    price_output_per_mtok: float = 0.0  # teacher price per million completion tokens
    dry_run: bool = False  # print what would be sent and its estimated tokens; send nothing
    teacher_train_questions: int = 300  # teacher_model "trained": questions of the task's dev split
    teacher_train_epochs: float = 2.0  # teacher_model "trained": its SFT epochs (the rest: the top-level keys)
    track_a_questions: str = "kept"  # kept: Track A on the questions Track B keeps (a fair A/B) | all
    # the student's target from a teacher reply: its reasoning, then its final assessment; the teaching analysis
    # (it judges the draft) drop: removed | after: placed after the final assessment | first: the seed's order
    draft_analysis: str = "drop"
    # Phase C, iterations 3..num_rounds (one round each): the round's pairs, of the kinds switched on
    on_policy_pairs: bool = True  # M_{t-1}'s own samples on Track B's prompt: a correct reply vs a wrong one
    policy_samples: int = 8  # samples per training question and round
    policy_temperature: float = 1.0  # sampling temperature of Phase C's samples (> 0)
    policy_questions: int = 0  # questions a round samples: a seeded draw of the validated set, new each round (0: all)
    draft_pairs: bool = False  # chosen = the teacher's target, rejected = the student's draft where it is wrong
    flipped_pairs: bool = False  # where no draft pair is made: rejected = the target with its verdict flipped
    max_pairs: int = 0  # Phase C: at most this many pairs per round, a seeded sample keeping the class shares (0: all)
    # the attribution check (attribution.py, seed 003's validation table): integrated gradients of a reply's verdict
    # over its Track B prompt, the share on the draft's tokens
    attribution_questions: int = 20  # attribution: the first N test questions (0: every one)
    attribution_steps: int = 16  # attribution: integration steps (Gauss-Legendre); the convergence delta says if enough
    attribution_batch_size: int = 8  # attribution: integration steps per forward/backward pass (bounds memory)
    # question-quality win-rate (question_quality.py): the teacher judges the clarifying questions of the first N
    # test drafts, before vs after training (0: every test draft); its reply: a reason, then "Better: A|B"
    question_quality_questions: int = 0
    question_quality_max_tokens: int = 200  # reply limit of each question-quality judgement (greedy)

    def validate(self, where: str) -> None:
        def bad(key: str, message: str) -> InputError:
            return InputError(f"{where}: distill.{key}: {message}")

        self.teacher_generation.validate(where, "distill.teacher_generation")
        for key in ("train_samples", "draft_shots", "teacher_train_questions", "max_pairs",
                    "question_quality_questions", "policy_questions"):
            if getattr(self, key) < 0:
                raise bad(key, f"{getattr(self, key)} must be >= 0")
        for key in ("draft_max_new_tokens", "teacher_max_tokens", "question_quality_max_tokens"):
            if getattr(self, key) < 1:
                raise bad(key, f"{getattr(self, key)} must be >= 1")
        if self.teacher_train_epochs <= 0:
            raise bad("teacher_train_epochs", f"{self.teacher_train_epochs} must be > 0")
        for key in ("draft_temperature", "teacher_temperature", "price_input_per_mtok", "price_output_per_mtok"):
            if getattr(self, key) < 0:
                raise bad(key, f"{getattr(self, key)} must be >= 0")
        _one_of(where, "distill.teacher_requires_key", self.teacher_requires_key, ("auto", "always", "never"))
        _one_of(where, "distill.track_a_questions", self.track_a_questions, ("kept", "all"))
        _one_of(where, "distill.draft_analysis", self.draft_analysis, DRAFT_ANALYSIS)
        if not (self.on_policy_pairs or self.draft_pairs or self.flipped_pairs):
            raise bad("on_policy_pairs", "Phase C needs a kind of pairs: switch on on_policy_pairs, draft_pairs or "
                                         "flipped_pairs")
        if self.policy_samples < 2:
            raise bad("policy_samples", f"{self.policy_samples} must be >= 2 (a pair is two of a question's samples)")
        if self.policy_temperature <= 0:
            raise bad("policy_temperature", f"{self.policy_temperature} must be > 0 (greedy samples are all one reply)")
        if self.attribution_questions < 0:
            raise bad("attribution_questions", f"{self.attribution_questions} must be >= 0")
        for key in ("attribution_steps", "attribution_batch_size"):
            if getattr(self, key) < 1:
                raise bad(key, f"{getattr(self, key)} must be >= 1")


# The seed-003 `.env` names, read from the environment when `method: distill` (over the config file,
# under --set): environment variable -> config key
DISTILL_ENV = {"DATASET_NAME": "distill.dataset", "TRAIN_SAMPLES": "distill.train_samples", "RANDOM_SEED": "seed",
               "MODEL_NAME": "base_model_path", "MAX_NEW_TOKENS": "distill.draft_max_new_tokens",
               "BATCH_SIZE": "batch_size", "MAX_SEQ_LENGTH": "max_seq_length", "GPT4_MODEL": "distill.teacher_model",
               "GPT4_MAX_TOKENS": "distill.teacher_max_tokens", "GPT4_TEMPERATURE": "distill.teacher_temperature",
               "DRY_RUN": "distill.dry_run", "USE_4BIT": "training_method"}


def distill_env_overrides(environ) -> dict:
    """The config keys the seed's `.env` names set. OPENAI_API_KEY stays in the environment (the
    teacher's `api_key_env` names it), and so does the openai client's OPENAI_BASE_URL; with
    `teacher_generation.backend: auto`, a GPT4_MODEL that names no local model is asked through the
    openai backend (the rule: `teacher_generation` in stages/teacher.py). Values are read as JSON when
    they parse, Python's True/False as booleans; USE_4BIT true means training_method qlora."""
    out = {}
    for name, key in DISTILL_ENV.items():
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        value = {"true": True, "false": False}.get(raw.strip().lower(), raw)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if name == "USE_4BIT":
            if not isinstance(value, bool):
                raise InputError(f"environment: USE_4BIT={raw!r}: expected True or False")
            if not value:
                continue
            value = "qlora"
        out[key] = value
    return out


@dataclass
class Config:
    # --- seed 000 ---
    name: str = "star"  # the run's name (informational; the run folder is named by RUN)
    method: str = "star"  # mk/<method>.mk: star | expert_iteration | self_rewarding | iterative_dpo | distill
    base_model_path: str = "smollm2-135m"  # model M0: smollm2-135m (embedded), a local checkpoint or a hub id
    reward_config: RewardConfig = field(default_factory=RewardConfig)  # how samples are scored
    datasets: list[DatasetConfig] = field(default_factory=list)  # prompt files (seed 000); empty: the built-in `task`
    dataset_selection_strategy: str = "sequential"  # sequential | difficulty_curriculum | round_robin | random_weighted
    enable_difficulty_curriculum: bool = False  # seed 000's switch; true needs the difficulty_curriculum strategy
    # difficulty_curriculum: round r takes level [r-1] (the last one after the list ends); empty: the levels
    # present, easiest first, spread over num_rounds
    difficulty_progression: list[str] = field(default_factory=list)
    samples_per_round: int = 0  # prompts per round; 0 = all
    num_rounds: int = 3  # iterations of `make rounds` after the iteration-0 baseline
    num_generations_per_prompt: int = 4  # samples per prompt in stage 1 (the DPO methods' candidates)
    filter_strategy: str = "correct"  # which samples are kept: correct | top_k_percent | threshold | best_of_n | none
    filter_top_k_percent: float = 20.0  # top_k_percent: the share of all samples kept, by reward_score
    filter_threshold: float = 0.5  # threshold: samples with reward_score >= this are kept
    training_method: str = "lora"  # lora | qlora (4-bit NF4 base, bitsandbytes) | full
    learning_rate: float = 2e-4  # SFT learning rate (DPO's: dpo.learning_rate)
    num_train_epochs: float = 2.0  # SFT epochs of an iteration's model (DPO's: dpo.num_train_epochs)
    # --- data ---
    task: TaskConfig = field(default_factory=TaskConfig)  # the built-in seeded task, used when datasets is empty
    test_file: str = ""  # evaluation data when `datasets` is used; empty: the task's test split
    max_samples: int = 0  # cap on training prompts per round; 0 = all
    # iteration t runs round t + round_offset: that round's prompts (dataset_selection_strategy) and random
    # streams; e.g. 1 when a run's iteration 1 starts from another run's M1 and stands beside its iteration 2
    round_offset: int = 0
    eval_max_samples: int = 0  # cap on evaluation prompts; 0 = all
    eval_holdout: float = 0.1  # with `datasets` and no test_file: this share of each dataset is held out for eval
    seed: int = 0  # seed of sampling (one stream per request), training and the seeded draws
    # --- prompt (one builder for every stage) ---
    k: int = 0  # few-shot examples in every prompt
    system_prompt: str = (
        "Solve the problem. Think step by step, briefly, then give the final answer "
        "on the last line as 'Answer: <number>'."
    )  # the system turn of every prompt (a record's own system message replaces it)
    few_shot_file: str = ""  # JSONL of {prompt, response}; empty: built-in math examples
    use_chat_template: bool = True  # the tokenizer's chat template; false: a plain Question:/Solution: layout
    # --- generation ---
    temperature: float = 0.7  # sampling temperature of the generating stages; evaluation is greedy
    top_p: float = 1.0  # top-p of the generating stages (1.0: off)
    top_k: int = 0  # top-k of the generating stages (0: off)
    max_new_tokens: int = 128  # reply limit; replies cut off here are never trained on
    batch_size: int = 64  # generation rows in flight
    eval_batch_size: int = 64  # evaluation rows in flight
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # who writes the replies
    dpo: DPOSection = field(default_factory=DPOSection)  # preference training (train_dpo.py)
    self_rewarding: SelfRewardingConfig = field(default_factory=SelfRewardingConfig)  # method self_rewarding's settings
    distill: DistillConfig = field(default_factory=DistillConfig)  # method distill's settings
    iterative_dpo: IterativeDPOConfig = field(default_factory=IterativeDPOConfig)  # method iterative_dpo's settings
    dtype: str = "auto"  # auto | bf16 | fp32 | fp16 (GPU)
    # --- STaR ---
    rationalize: bool = True  # STaR stage 2: retry unsolved prompts with the answer as a hint
    rationalization_samples: int = 1  # hinted attempts per unsolved prompt
    max_per_prompt: int = 4  # kept training examples per prompt
    # --- selection: balance the kept set across classes (seed 003: filtering skewed yes/no 28/72) ---
    balance_by: str = ""  # "" (off) | answer (metadata.expected_answer) | category | difficulty | dataset
    balance_method: str = "downsample"  # downsample: every class to the smallest; upsample: repeat to the largest
    init: str = "base"  # base: train M_i from M_0 (STaR); previous: from M_{i-1}
    # --- training ---
    train_batch_size: int = 8  # SFT examples per device step
    gradient_accumulation_steps: int = 1  # SFT micro-batches per optimizer step
    warmup_ratio: float = 0.05  # share of the training steps spent warming the learning rate up
    lr_scheduler_type: str = "cosine"  # a scheduler name of transformers' TrainingArguments (cosine, linear, ...)
    weight_decay: float = 0.0  # the optimizer's weight decay
    optim: str = "adamw_torch"  # any optimizer name of transformers' TrainingArguments (e.g. sgd, adamw_8bit)
    max_seq_length: int = 1024  # SFT example limit in tokens, longer ones skipped (room for k=10 and a reply)
    padding_free: bool = False  # each batch as one packed row (TRL padding_free): no compute on padding
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA alpha (the update is scaled by alpha / r)
    lora_dropout: float = 0.05  # dropout on the LoRA layers' input
    lora_target_modules: str = "all-linear"  # all-linear, or a comma-separated list of module names to adapt
    logging_steps: int = 1  # training steps between logged losses
    # none, or the trackers (tensorboard, wandb, mlflow, trackio) the SFT and DPO trainings report to, with each
    # iteration's round metrics at step = iteration (selftrain/tracking.py; local files in <run>/tracker/)
    report_to: list[str] = field(default_factory=lambda: ["none"])

    def validate(self, where: str = "config") -> "Config":
        """Check each value (each section checks its own); checks.check_runnable: what cannot run here."""
        self.reward_config.validate(where)
        self._validate_choices(where)
        self.generation.validate(where)
        self.dpo.validate(where)
        self.self_rewarding.validate(where)
        self.distill.validate(where)
        self.iterative_dpo.validate(where)
        self.task.validate(where)
        for i, ds in enumerate(self.datasets):
            ds.validate(where, i)
        self._validate_ranges(where)
        return self

    def _validate_choices(self, where: str) -> None:
        for key, allowed in (("dataset_selection_strategy", SELECTION_STRATEGIES),
                             ("filter_strategy", FILTER_STRATEGIES), ("training_method", TRAINING_METHODS),
                             ("init", ("base", "previous")), ("balance_by", BALANCE_KEYS),
                             ("balance_method", BALANCE_METHODS), ("method", METHODS),
                             ("dtype", ("auto", "bf16", "fp32", "fp16"))):
            _one_of(where, key, getattr(self, key), allowed)
        if self.enable_difficulty_curriculum and self.dataset_selection_strategy != "difficulty_curriculum":
            raise _bad(where, "enable_difficulty_curriculum", "true needs dataset_selection_strategy: "
                       f"difficulty_curriculum (it is {self.dataset_selection_strategy!r})")
        for i, level in enumerate(self.difficulty_progression):
            _one_of(where, f"difficulty_progression[{i}]", level, DIFFICULTIES)
        for i, tracker in enumerate(self.report_to):
            _one_of(where, f"report_to[{i}]", tracker, ("none",) + TRACKERS)
        if not self.report_to or ("none" in self.report_to and len(self.report_to) > 1):
            raise _bad(where, "report_to",
                       f"{self.report_to}: give none alone, or one or more of {', '.join(TRACKERS)}")

    def _validate_ranges(self, where: str) -> None:
        positive = ["num_generations_per_prompt", "max_new_tokens", "batch_size", "eval_batch_size",
                    "train_batch_size", "gradient_accumulation_steps", "max_per_prompt", "max_seq_length",
                    "lora_r", "lora_alpha", "num_rounds", "rationalization_samples", "logging_steps"]
        for key in positive:
            if getattr(self, key) < 1:
                raise _bad(where, key, f"{getattr(self, key)} must be >= 1")
        for key in ["k", "samples_per_round", "max_samples", "eval_max_samples", "top_k", "round_offset"]:
            if getattr(self, key) < 0:
                raise _bad(where, key, f"{getattr(self, key)} must be >= 0")
        if self.temperature < 0:
            raise _bad(where, "temperature", f"{self.temperature} must be >= 0")
        if self.learning_rate <= 0:
            raise _bad(where, "learning_rate", f"{self.learning_rate} must be > 0")
        if self.num_train_epochs <= 0:
            raise _bad(where, "num_train_epochs", f"{self.num_train_epochs} must be > 0")
        for key, low, high, shown in (("top_p", 0, 1, "(0, 1]"), ("filter_top_k_percent", 0, 100, "(0, 100]")):
            if not low < getattr(self, key) <= high:
                raise _bad(where, key, f"{getattr(self, key)} must be in {shown}")
        for key in ("warmup_ratio", "eval_holdout", "lora_dropout"):
            if not 0 <= getattr(self, key) < 1:
                raise _bad(where, key, f"{getattr(self, key)} must be in [0, 1)")

    def to_dict(self, redact: bool = True) -> dict:
        data = dataclasses.asdict(self)
        if redact and data["reward_config"]["api_key"]:
            data["reward_config"]["api_key"] = "<redacted>"
        return data


def _coerce(value: Any, kind: Any, where: str, key: str) -> Any:
    """Check `value` against the annotation `kind`, building nested dataclasses."""

    def bad(expected: str) -> InputError:
        return InputError(f"{where}: {key}: expected {expected}, got {value!r}")

    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise bad("a mapping")
        return _build(kind, value, where, prefix=f"{key}.")
    if get_origin(kind) is list:
        (item,) = get_args(kind)
        if isinstance(value, str) and item is str:  # "easy,medium" on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise bad("a list")
        return [_coerce(v, item, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise bad("true or false")
    if kind in (int, float):
        number = value
        if isinstance(value, str):
            try:
                number = kind(value)
            except ValueError:
                raise bad("an integer" if kind is int else "a number") from None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise bad("an integer" if kind is int else "a number")
        if kind is int and not float(number).is_integer():
            raise bad("an integer")
        if not math.isfinite(number):  # "nan" and "inf" parse as floats, and NaN passes every range check
            raise bad("a finite number")
        return kind(number)
    if kind is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        return value
    raise TypeError(f"unhandled annotation {kind}")


def _build(cls, data: dict, where: str, prefix: str = ""):
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in data:
        if prefix + str(key) in MOVED:
            raise InputError(f"{where}: '{prefix}{key}' is now '{MOVED[prefix + str(key)]}' (same values)")
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise InputError(f"{where}: unknown key '{prefix}{key}'{hint}")
    return cls(**{k: _coerce(v, hints[k], where, prefix + k) for k, v in data.items()})


def load_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # the parsers' own messages carry line and column
        raise InputError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}".replace("\n", " ")) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of keys at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Defaults < file < overrides (already-parsed CLI values; None means not given)."""
    data: dict = load_config_file(path) if path else {}
    where = str(path) if path else "config"
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    if given.get("method", data.get("method")) == "distill":
        data.setdefault("balance_by", "answer")  # the seed's filter skewed yes/no 45/55 -> 28/72 without it
        for key, value in distill_env_overrides(os.environ).items():
            _set_dotted(data, key, value)
    for key, value in given.items():
        _set_dotted(data, key, value)
    config = _build(Config, data, where)
    return config.validate(where)


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InputError(f"{key}: '{'.'.join(parts[:depth + 1])}' is not a section with keys")
    node[parts[-1]] = value


def parse_set_overrides(items: list[str]) -> dict:
    """`--set key=value` pairs (dotted keys reach nested sections)."""
    result = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        try:
            result[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            result[key.strip()] = value
    return result


def lookup(path: str, key: str):
    """One resolved value of the config file at `path`; dotted keys reach into sections."""
    value = load_config(path).to_dict()
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise InputError(f"{path}: no key {key!r}")
        value = value[part]
    return value


def main(argv=None) -> int:
    """`python -m selftrain.config CONFIG KEY`: print one resolved value (used by the Makefile).

    Prints `error: ...` and returns 2 on a bad file or key itself, like cli.run, so
    this module needs nothing above it."""
    def command(args: list[str]) -> None:
        if len(args) != 2:
            raise InputError("usage: python -m selftrain.config CONFIG KEY")
        print(lookup(args[0], args[1]))

    return exit_code(command, argv)


if __name__ == "__main__":
    raise SystemExit(main())
