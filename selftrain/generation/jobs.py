"""From stage records to requests and back: what every generating stage shares.

A job is the record a stage will write, minus the reply: `id`, the rendered
`prompt_text` and whatever fields the stage keeps, plus what is sent but not
written: `_prompt` (the text to generate from, when it is not `prompt_text`,
e.g. a hinted prompt) and `_messages` (the same prompt as chat messages, for
chat APIs). `run_jobs` sends the jobs whose
id is not yet on disk and appends each reply the moment it arrives, so a stage
killed midway resumes without sending any request again.

Each record gets `response`, `finish_reason` and `num_tokens`; a reply from a call that
answered several samples at once (the openai backend's `n`) has `num_tokens` null and
`call_usage` {samples, prompt_tokens, completion_tokens}: that call's totals, the same on
each of its samples. What the stage spent (requests, prompt and generated tokens, seconds)
goes in its metrics: the marker in a run, `<output>.config.json` beside a file by hand.
"""
from __future__ import annotations

import dataclasses

from selftrain.generation.base import Request, SamplingParams, described, request_seed
from selftrain.logging import log
from selftrain.records import JsonlAppender


def sampling_params(config, greedy: bool = False) -> SamplingParams:
    if greedy:
        return SamplingParams(temperature=0.0, max_new_tokens=config.max_new_tokens)
    return SamplingParams(config.temperature, config.top_p, config.top_k, config.max_new_tokens)


def stage_seed(config, iteration: int) -> int:
    """Each iteration draws fresh random streams: the same prompt is sampled anew by the next model.
    Iteration t draws round t + round_offset's (data.load_train_prompts takes that round's prompts)."""
    return config.seed * 1_000_003 + iteration + config.round_offset


def run_jobs(backend, jobs: list[dict], appender: JsonlAppender, params: SamplingParams, seed: int) -> dict:
    """Generate for the jobs not yet in `appender`, writing each record as its reply arrives."""
    todo = [job for job in jobs if job["id"] not in appender.done]
    skipped = len(jobs) - len(todo)
    if skipped:
        log(f"resuming: {skipped} of {len(jobs)} already written, {len(todo)} to go")
    by_key = {job["id"]: job for job in todo}
    requests = [Request(job["id"], job.pop("_prompt", job["prompt_text"]), tuple(job.pop("_messages", ())) or None,
                        params, request_seed(seed, job["id"])) for job in todo]
    before = dataclasses.replace(backend.stats)
    for completion in backend.generate(requests):
        if completion.key not in by_key:
            raise RuntimeError(f"backend {backend.name} answered {completion.key!r} twice or unasked")
        record = {**by_key.pop(completion.key), "response": completion.text,
                  "finish_reason": completion.finish_reason, "num_tokens": completion.num_tokens}
        if completion.call_usage is not None:  # one call answered several samples: its usage, shared whole
            record["call_usage"] = dataclasses.asdict(completion.call_usage)
        appender.write(record)
    if by_key:  # a backend must answer every request exactly once
        raise RuntimeError(f"backend {backend.name} returned no completion for {len(by_key)} requests, "
                           f"e.g. {next(iter(by_key))}")
    spent = backend.stats.since(before)
    return {"generated": len(todo), "skipped_existing": skipped, **spent.as_dict(), "backend": described(backend)}


def run_jobs_in_order(backend, jobs: list[dict], path, params: SamplingParams, seed: int) -> dict:
    """`run_jobs` into the append-only file at `path` (resumable), then the file in the jobs' order."""
    from selftrain.records import reorder_jsonl

    with JsonlAppender(path) as appender:
        metrics = run_jobs(backend, jobs, appender, params, seed)
    reorder_jsonl(path, [job["id"] for job in jobs])  # completion order -> canonical order
    return metrics


def open_backend(config, model_name: str, spec, *, batch_size: int, role: str, progress: bool = True):
    """The backend for a stage of `role` ("sample" or "eval") on `model_name`, and the student's
    tokenizer (which renders every prompt)."""
    from selftrain.generation import get_backend
    from selftrain.models import load_tokenizer, resolve_model

    resolve_model(model_name)  # a missing checkpoint is a one-line error before any work
    backend = get_backend(config, model_name, spec, batch_size=batch_size, role=role, progress=progress)
    tokenizer = getattr(backend, "tokenizer", None) or load_tokenizer(model_name)
    return backend, tokenizer
