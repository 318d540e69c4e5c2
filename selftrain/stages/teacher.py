"""teacher.py: the teacher reasons about every training draft (seed 003's GPT-4 step).

Each draft of the training split goes to the teacher with the seed's format (teaching analysis,
numbered steps, `## Final Assessment ... **YES**/**NO**`) through a generation backend:
`distill.teacher_generation` (`backend: openai` + `base_url` for a paid API or a local vLLM /
llama.cpp server, `api: chat` for chat models; any local backend for a checkpoint). The teacher is
`distill.teacher_model` (for a server, the name it knows; `trained`: the run's own teacher).
With `backend: auto` the name decides (`teacher_generation`): a checkpoint on disk, an embedded model or
a hub id is loaded locally; any other name (the seed's GPT4_MODEL=gpt-4.1-nano-2025-04-14) is asked
through the openai backend with chat completions, at `base_url`, else $OPENAI_BASE_URL, else OpenAI's API.

Append-only and resumable: a reply is on disk the moment it arrives and a rerun sends only the
drafts without one, so after a kill -9 no answered request is sent again. The marker counts this
run's requests, prompt and completion tokens (the server's `usage`) and an estimated cost from
`distill.price_input_per_mtok` / `price_output_per_mtok`. `distill.dry_run` (the seed's DRY_RUN)
sends nothing: it prints what would be sent and its estimated tokens and cost, and writes nothing.
A teacher behind a remote URL needs its key (`teacher_generation.api_key_env`, OPENAI_API_KEY by
default), checked before any request; the key is never written or logged.
The targets the student may be trained on (`distill.kept_target`: the reasoning_target of each finished
reply that agrees with the truth) must fit in the student's `max_new_tokens` as the student's tokenizer
counts them (`checks.check_targets_fit`), else the stage stops naming the reply's line; the replies stay
on disk, so a rerun with a larger limit sends nothing.
Output records: id, prompt_id (the question), prompt_text (the teacher prompt as rendered),
response (the teacher's reply), finish_reason, num_tokens, teacher, teacher_answer (yes / no / null).

  python teacher.py --run_dir results/distill --iteration 1
  python teacher.py --input data/student_drafts.jsonl --output data/teacher_outputs.jsonl
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

from selftrain.checks import check_targets_fit
from selftrain.cli import base_parser, resolve_config, run
from selftrain.config import Config, GenerationConfig
from selftrain.distill import (TRAINED_TEACHER, expected, kept_target, teacher_answer, teacher_record,
                               teacher_run_dir, teacher_spec)
from selftrain.errors import InputError
from selftrain.generation.base import SamplingParams
from selftrain.generation.jobs import run_jobs_in_order, stage_seed
from selftrain.generation.openai_compat import LOOPBACK
from selftrain.http import key_from_env
from selftrain.logging import log
from selftrain.prompts import build_messages, render_prompt
from selftrain.records import iter_jsonl, read_jsonl, write_jsonl_atomic
from selftrain.runs import model_dir, open_stage

TEACHER_SEED = 104_729  # the teacher's draws differ from the student's of the same iteration
OPENAI_URL = "https://api.openai.com/v1"  # OpenAI's API: the openai client's default without OPENAI_BASE_URL


def teacher_name(config: Config, run_dir) -> str:
    name = config.distill.teacher_model
    if not name:
        raise InputError("distill.teacher_model: missing: name the teacher (a checkpoint, a hub id, the model a "
                         "server serves, or 'trained' for the run's own teacher)")
    if name == TRAINED_TEACHER:
        if not run_dir:
            raise InputError("distill.teacher_model 'trained' is the teacher a run trains: give --run_dir")
        return str(model_dir(teacher_run_dir(run_dir), 1))
    return name


def teacher_generation(config: Config, environ=os.environ) -> tuple[GenerationConfig, str]:
    """The teacher's generation section with `backend: auto` decided, and why. The one rule, from what
    `distill.teacher_model` can be:

    1. `trained` or a path on disk: a local backend (auto);
    2. else, with a base URL (`teacher_generation.base_url`, else $OPENAI_BASE_URL, the openai client's
       own variable): the server there (openai, chat);
    3. else an embedded model or a hub id (owner/name): a local backend (a hub id is fetched);
    4. else (gpt-4.1-nano-2025-04-14: a name no local backend can load) OpenAI's API (openai, chat).

    Chat, because the teacher's own chat template is not here to render a prompt. Whether a key is set
    never decides where requests go: `check_key` refuses a missing one before any is sent. A backend set
    in the config is kept."""
    from selftrain.models import EMBEDDED_MODELS, looks_like_local_path

    gen, name = config.distill.teacher_generation, config.distill.teacher_model
    if gen.backend != "auto":
        return gen, f"set by distill.teacher_generation.backend: {gen.backend}"
    if name == TRAINED_TEACHER or Path(name).expanduser().exists():
        return gen, f"distill.teacher_model {name!r} is a checkpoint: a local backend"
    url = gen.base_url or environ.get("OPENAI_BASE_URL", "")
    if url:
        where = "distill.teacher_generation.base_url" if gen.base_url else "$OPENAI_BASE_URL"
        if not url.startswith(("http://", "https://")):  # the config's is validated on load
            raise InputError(f"{where}: {url!r} is not an http(s) URL")
        return (dataclasses.replace(gen, backend="openai", api="chat", base_url=url),
                f"{where} {url}: the server there, chat completions")
    if name in EMBEDDED_MODELS or "/" in name or looks_like_local_path(name):
        return gen, f"distill.teacher_model {name!r} is an embedded model or a hub id: a local backend"
    return (dataclasses.replace(gen, backend="openai", api="chat", base_url=OPENAI_URL),
            f"distill.teacher_model {name!r} is no checkpoint, embedded model or hub id: OpenAI's API at "
            f"{OPENAI_URL} (set $OPENAI_BASE_URL or distill.teacher_generation.base_url for another server), "
            f"chat completions")


def resolve_teacher(config: Config) -> Config:
    """`config` with the teacher's backend decided (`teacher_generation`): what its stages use and record."""
    gen, _ = teacher_generation(config)
    return dataclasses.replace(config, distill=dataclasses.replace(config.distill, teacher_generation=gen))


def teacher_config(config: Config) -> Config:
    """The config the teacher's backend reads: `generation` is the teacher's, decided."""
    return dataclasses.replace(config, generation=resolve_teacher(config).distill.teacher_generation)


def check_key(config: Config) -> None:
    """A teacher behind a remote server needs its key: refuse before anything is sent."""
    d = config.distill
    gen, _ = teacher_generation(config)
    if gen.backend != "openai" or gen.server or d.teacher_requires_key == "never":
        return
    remote = (urlsplit(gen.base_url).hostname or "") not in LOOPBACK
    if (d.teacher_requires_key == "always" or remote) and not key_from_env(gen.api_key_env):
        raise InputError(f"distill.teacher_generation.api_key_env: ${gen.api_key_env} is not set: the teacher at "
                         f"{gen.base_url} needs a key (export it; nothing was sent)")


def read_drafts(path) -> list[dict]:
    rows = []
    for lineno, r in iter_jsonl(path):
        for key in ("id", "prompt", "response"):
            if not isinstance(r.get(key), str):
                raise InputError(f"{path}:{lineno}: {key}: missing or not a string (is this a drafts file?)")
        if not isinstance(r.get("metadata"), dict) or "expected_answer" not in r["metadata"]:
            raise InputError(f"{path}:{lineno}: metadata.expected_answer: missing")
        rows.append(r)
    if not rows:
        raise InputError(f"{path}: file is empty (no drafts)")
    return rows


def teacher_jobs(config: Config, drafts: list[dict], tokenizer, teacher: str) -> list[dict]:
    """One request per training draft (drafts of other splits are the student's own business)."""
    spec = teacher_spec(config)
    jobs = []
    for draft in drafts:
        if draft.get("split", "train") != "train":
            continue
        try:
            asked = teacher_record(draft, draft["response"], config.distill.teacher_sees_facts)
        except ValueError as exc:
            raise InputError(f"teacher: {exc}") from None
        jobs.append({"id": draft["id"], "prompt_id": draft["id"], "teacher": teacher,
                     "prompt_text": render_prompt(tokenizer, asked, spec) if tokenizer is not None else asked["prompt"],
                     "_messages": build_messages(asked, spec)})
    if not jobs:
        raise InputError("teacher: the drafts hold no training-split draft to send")
    return jobs


def estimated_cost(config: Config, prompt_tokens: int, completion_tokens: int) -> float:
    d = config.distill
    return round((prompt_tokens * d.price_input_per_mtok + completion_tokens * d.price_output_per_mtok) / 1e6, 6)


def dry_run(config: Config, jobs: list[dict], done: set[str], output_path, tokenizer) -> dict:
    """What a real run would send (the jobs not on disk) and its estimated tokens: nothing is sent or written."""
    todo = [job for job in jobs if job["id"] not in done]
    if not todo:
        raise InputError(f"distill.dry_run: nothing would be sent: all {len(jobs)} teacher replies are already in "
                         f"{output_path}")
    if tokenizer is not None:
        prompt_tokens = sum(len(tokenizer(job["prompt_text"], add_special_tokens=False)["input_ids"]) for job in todo)
        how = "the prompts counted with the teacher's own tokenizer"
    else:
        prompt_tokens = sum(len(m["content"]) for job in todo for m in job["_messages"]) // 4
        how = "about 4 characters per token (the teacher's tokenizer is not here)"
    most = len(todo) * config.distill.teacher_max_tokens
    print(f"dry run: would send {len(todo)} requests ({len(jobs) - len(todo)} already answered) to "
          f"{config.distill.teacher_model}; estimated prompt tokens {prompt_tokens} ({how}), completion tokens "
          f"at most {most}; estimated cost at most ${estimated_cost(config, prompt_tokens, most):.4f}")
    print("first request:\n" + json.dumps({"messages": todo[0]["_messages"]}, indent=1, ensure_ascii=False))
    return {"would_send": len(todo), "estimated_prompt_tokens": prompt_tokens, "max_completion_tokens": most}


def longest_target(config: Config, drafts: list[dict], rows: list[dict], output_path) -> int | None:
    """The student-token count of the longest target the student may be trained on (`kept_target`: what
    distill_data's validated stage keeps), None without one; an InputError naming the reply's line
    (`check_targets_fit`) when one does not fit in max_new_tokens."""
    from selftrain.models import load_tokenizer

    try:
        truth = {d["id"]: expected(d) for d in drafts}
    except ValueError as exc:
        raise InputError(f"teacher: {exc}") from None
    targets = []
    for line, r in enumerate(rows, 1):
        target, _ = kept_target(r, truth.get(r["prompt_id"]), config.distill.draft_analysis)
        if target is not None:
            targets.append((line, target))
    if not targets:
        return None
    return max(check_targets_fit(config, load_tokenizer(config.base_model_path), targets, output_path))


def decide_teacher(config: Config, run_dir, role: str) -> tuple[str, bool]:
    """The teacher's name and whether it is a local model (else a server sent chat messages), with the reason
    logged; its key is checked (unless distill.dry_run) before a tokenizer is loaded or anything is sent."""
    teacher = teacher_name(config, run_dir)
    gen, why = teacher_generation(config)  # the one rule for backend auto
    log(f"{role} {teacher}: {why}")
    if not config.distill.dry_run:
        check_key(config)
    local = Path(teacher).is_dir() or gen.backend != "openai"
    if not local and gen.api != "chat":
        raise InputError("distill.teacher_generation.api: 'completions' sends a prompt rendered with the teacher's "
                         f"own chat template, which is not here for {teacher!r}: use api: chat")
    return teacher, local


def ask_teacher(config: Config, drafts_path, output_path, run_dir=None) -> dict | None:
    """Teacher replies for every training draft into `output_path`; the metrics (None after a dry run)."""
    from selftrain.generation import get_backend
    from selftrain.models import load_tokenizer

    drafts = read_drafts(drafts_path)
    teacher, local = decide_teacher(config, run_dir, "teacher")
    config = resolve_teacher(config)
    tokenizer = load_tokenizer(teacher) if local else None  # an API teacher is sent chat messages
    jobs = teacher_jobs(config, drafts, tokenizer, teacher)
    if config.distill.dry_run:
        done = {r["id"] for r in read_jsonl(output_path, allow_empty=True)} if Path(output_path).is_file() else set()
        dry_run(config, jobs, done, output_path, tokenizer)
        return None
    d = config.distill
    params = SamplingParams(d.teacher_temperature, 1.0, 0, d.teacher_max_tokens)
    backend = get_backend(teacher_config(config), teacher, teacher_spec(config), batch_size=config.batch_size, role="sample")
    log(f"teacher {teacher}: {len(jobs)} drafts -> {output_path}")
    with backend:
        metrics = run_jobs_in_order(backend, jobs, output_path, params, stage_seed(config, 1) + TEACHER_SEED)
    rows = [dict(r, teacher_answer=teacher_answer(r["response"]) if r["finish_reason"] == "stop" else None)
            for r in read_jsonl(output_path)]
    longest = longest_target(config, drafts, rows, output_path)
    write_jsonl_atomic(output_path, rows)
    metrics.update(estimated_cost_usd=estimated_cost(config, metrics["prompt_tokens"], metrics["generated_tokens"]),
                   replies=len(rows), unparsable=sum(r["teacher_answer"] is None for r in rows),
                   truncated=sum(r["finish_reason"] == "length" for r in rows), longest_target_student_tokens=longest)
    log(f"teacher: {metrics}")
    return metrics


def main(argv=None):
    p = base_parser(__doc__)
    p.add_argument("--input", help="drafts JSONL (default in a run: iteration 0's drafts)")
    p.add_argument("--output", help="teacher replies JSONL (default by hand: data/teacher_outputs.jsonl)")
    args = p.parse_args(argv)
    config = resolve_config(args, {})
    drafts = Path(args.input) if args.input else None
    if drafts is None and args.run_dir:
        from selftrain.runs import finished_output

        drafts = finished_output(args.run_dir, 0, "drafts")
    if drafts is None:
        raise InputError("teacher: give --input (the drafts), or --run_dir")
    stage = open_stage(args, "teacher", default="data/teacher_outputs.jsonl")
    if stage.done():
        return
    metrics = ask_teacher(config, drafts, stage.path, args.run_dir)
    if metrics is not None:
        stage.output.finish(resolve_teacher(config), metrics,
                            {"input": str(drafts), "teacher": teacher_name(config, args.run_dir)})


if __name__ == "__main__":
    run(main)
