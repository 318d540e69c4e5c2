"""STaR stage 1: sample N replies per prompt with the current model.

Output records (one per prompt x sample, appended and flushed one by one):
    id "<prompt_id>#<j>", prompt_id, sample_idx, iteration, generator,
    the input record's prompt/messages, difficulty, metadata,
    prompt_text (the exact rendered prompt, with the student's tokenizer, whatever
    backend wrote the reply), response, finish_reason, num_tokens (null for the samples
    of one openai call with `n`, which carry the call's `call_usage` instead:
    generation/jobs.py).
"""
from __future__ import annotations

from selftrain.config import Config
from selftrain.generation.jobs import run_jobs_in_order, sampling_params, stage_seed
from selftrain.logging import log
from selftrain.prompts import PromptSpec, build_messages, render_prompt

INPUT_FIELDS = ("prompt", "messages", "difficulty", "dataset", "metadata")


def sample_ids(prompts: list[dict], n: int) -> list[str]:
    """The ids of a round's samples in canonical order: prompt by prompt, sample 0..n-1."""
    return [f"{record['id']}#{j}" for record in prompts for j in range(n)]


def generate_samples(config: Config, model_name: str, prompts: list[dict], output_path, iteration: int,
                     backend, tokenizer) -> dict:
    """`tokenizer` is the student's: it renders the prompt_text the training data keeps."""
    spec = PromptSpec.from_config(config)
    jobs = []
    for record in prompts:
        prompt_text = render_prompt(tokenizer, record, spec)
        messages = build_messages(record, spec)
        for j in range(config.num_generations_per_prompt):
            jobs.append({
                "id": f"{record['id']}#{j}", "prompt_id": record["id"], "sample_idx": j,
                "iteration": iteration, "generator": model_name,
                **{k: record[k] for k in INPUT_FIELDS if k in record},
                "prompt_text": prompt_text, "_messages": messages,
            })
    log(f"stage 1: {len(prompts)} prompts x {config.num_generations_per_prompt} samples -> {output_path}")
    metrics = run_jobs_in_order(backend, jobs, output_path, sampling_params(config), stage_seed(config, iteration))
    metrics.update(prompts=len(prompts), samples=len(jobs))
    log(f"stage 1 done: {metrics}")
    return metrics
