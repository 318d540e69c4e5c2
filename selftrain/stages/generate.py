"""STaR stage 1: sample N replies per prompt with the current model.

Output records (one per prompt x sample, appended and flushed one by one):
    id "<prompt_id>#<j>", prompt_id, sample_idx, iteration, generator,
    the input record's prompt/messages, difficulty, metadata,
    prompt_text (the exact rendered prompt), response, finish_reason, num_tokens.
"""
from __future__ import annotations

import time

from selftrain.config import Config
from selftrain.generation import Engine, Request, SamplingParams
from selftrain.logging import log
from selftrain.models import load_model, load_tokenizer
from selftrain.prompts import PromptSpec, encode_prompt, render_prompt
from selftrain.records import JsonlAppender, reorder_jsonl

INPUT_FIELDS = ("prompt", "messages", "difficulty", "dataset", "metadata")


def sampling_params(config: Config, greedy: bool = False) -> SamplingParams:
    if greedy:
        return SamplingParams(temperature=0.0, max_new_tokens=config.max_new_tokens)
    return SamplingParams(config.temperature, config.top_p, config.top_k, config.max_new_tokens)


def load_generator(model_name: str, config: Config):
    started = time.perf_counter()
    tokenizer = load_tokenizer(model_name)
    model = load_model(model_name, dtype=config.dtype)
    log(f"loaded {model_name} ({model.dtype}, {model.device}) in {time.perf_counter() - started:.1f}s")
    return model, tokenizer


def run_requests(model, tokenizer, config: Config, jobs: list[dict], appender: JsonlAppender,
                 params: SamplingParams, batch_size: int, iteration: int) -> dict:
    """Generate for `jobs` (each: id, prompt_ids, record fields) not yet in `appender`.

    Each iteration draws fresh random streams: the same prompt is sampled anew by the next model."""
    todo = [job for job in jobs if job["id"] not in appender.done]
    skipped = len(jobs) - len(todo)
    if skipped:
        log(f"resuming: {skipped} of {len(jobs)} already written, {len(todo)} to go")
    by_key = {job["id"]: job for job in todo}
    engine = Engine(model, tokenizer, params, batch_size=batch_size, seed=config.seed * 1_000_003 + iteration,
                    engine=config.generation_engine)
    requests = [Request(job["id"], job.pop("prompt_ids")) for job in todo]
    for completion in engine.generate(requests):
        job = by_key[completion.key]
        appender.write({
            **job,
            "response": tokenizer.decode(completion.token_ids, skip_special_tokens=True),
            "finish_reason": completion.finish_reason,
            "num_tokens": len(completion.token_ids),
        })
    seconds = engine.stats["seconds"]
    tokens = engine.stats["generated_tokens"]
    return {"generated": len(todo), "skipped_existing": skipped, "generated_tokens": tokens,
            "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1) if seconds else 0.0}


def sample_ids(prompts: list[dict], n: int) -> list[str]:
    """The ids of a round's samples in canonical order: prompt by prompt, sample 0..n-1."""
    return [f"{record['id']}#{j}" for record in prompts for j in range(n)]


def generate_samples(config: Config, model_name: str, prompts: list[dict], output_path, iteration: int,
                     model=None, tokenizer=None) -> dict:
    spec = PromptSpec.from_config(config)
    if model is None:
        model, tokenizer = load_generator(model_name, config)
    jobs = []
    for record in prompts:
        prompt_text = render_prompt(tokenizer, record, spec)
        prompt_ids = encode_prompt(tokenizer, prompt_text, spec)
        for j in range(config.num_generations_per_prompt):
            jobs.append({
                "id": f"{record['id']}#{j}", "prompt_id": record["id"], "sample_idx": j,
                "iteration": iteration, "generator": model_name,
                **{k: record[k] for k in INPUT_FIELDS if k in record},
                "prompt_text": prompt_text, "prompt_ids": list(prompt_ids),
            })
    log(f"stage 1: {len(prompts)} prompts x {config.num_generations_per_prompt} samples -> {output_path}")
    with JsonlAppender(output_path) as appender:
        metrics = run_requests(model, tokenizer, config, jobs, appender, sampling_params(config), config.batch_size, iteration)
    reorder_jsonl(output_path, [job["id"] for job in jobs])  # completion order -> canonical order
    metrics.update(prompts=len(prompts), samples=len(jobs))
    log(f"stage 1 done: {metrics}")
    return metrics
