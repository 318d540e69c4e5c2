"""self_instruct.py: M_{t-1} writes the prompts of Self-Rewarding iteration t (seed 004 step 1; Self-Instruct).

Run by mk/self_rewarding.mk before iteration t's samples (t >= 2) when `self_rewarding.self_instruct` is
true; the rules (seed pool, few-shot prompt, usability checks, near-duplicates, instructions) are in
selftrain/self_instruct.py. Two steps, each resumable after any kill and with its own marker:

  self_instruct_samples  one reply per request. Request i's prompt lists `self_instruct_shots` seed
                         requests, a seeded draw from the seed pool, and the model writes the next item;
                         sampled with the top-level temperature, top_p and max_new_tokens (the model goes
                         on listing until max_new_tokens: only its first item is used). Records: id "si<t>-<i>",
                         shots, shot_ids, iteration, generator, prompt_text, response, finish_reason,
                         num_tokens.
  self_instruct          the kept prompts as prompt records: {id, prompt (the request, then its checkable
                         instructions), dataset: self_instruct, metadata: {instruction_id_list, kwargs,
                         category, request, shot_ids, source, iteration}}. The marker counts requested,
                         generated, kept and dropped per reason (they add up); fewer kept than requested
                         is said there (`shortfall`) and the iteration goes on with what was kept; none
                         kept stops the stage with a message.

Iteration t's samples stage (create_data.py) then takes these prompts instead of the pool's window. By
hand, the output is a prompt file like any other (`datasets: [{path: ...}]`).

  python self_instruct.py --run_dir results/self_rewarding --iteration 2
  python self_instruct.py --config configs/self_rewarding_tiny.yaml --iteration 2 \\
      --model_name results/self_rewarding_tiny/iter_01/model --output data/iter2.prompts.jsonl
"""
from __future__ import annotations

from pathlib import Path

from selftrain.config import Config
from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.runs import StageOutput, generator_for, stage_output

SELF_INSTRUCT_SEED = 4_111  # request draws differ from the candidates' and the judge's draws of the iteration
FLAGS = {"seed_file": "self_rewarding.self_instruct_file", "num_prompts": "self_rewarding.self_instruct_prompts",
         "shots": "self_rewarding.self_instruct_shots"}


def parser():
    from selftrain.cli import base_parser

    p = base_parser(__doc__)
    p.add_argument("--model_name", help="the writer (default: the previous iteration's model; the base model "
                                        "for iteration 1)")
    p.add_argument("--output", help="kept prompts JSONL (default in a run: iter_NN/self_instruct_<ts>.jsonl); "
                                    "the replies go beside it as <stem>.samples.jsonl")
    p.add_argument("--seed_file", help="seed prompts JSONL, a `prompt` per line (config: "
                                       "self_rewarding.self_instruct_file; empty: the task's IFT split)")
    p.add_argument("--num_prompts", type=int, help="requests to write (config: self_rewarding.self_instruct_prompts)")
    p.add_argument("--shots", type=int, help="seed requests shown per request (config: "
                                             "self_rewarding.self_instruct_shots)")
    return p


def _outputs(args) -> dict[str, StageOutput]:
    if args.run_dir and not args.output:
        return {step: stage_output(step, explicit=None, run_dir=args.run_dir, iteration=args.iteration, default="")
                for step in ("self_instruct_samples", "self_instruct")}
    final = Path(args.output or f"data/self_instruct_iter{args.iteration}.jsonl")
    return {"self_instruct_samples": StageOutput(final.with_name(f"{final.with_suffix('').name}.samples.jsonl"), None),
            "self_instruct": StageOutput(final, None)}


def requested(config: Config, iteration: int) -> int:
    """Requests to write: `self_instruct_prompts`, or as many prompts as the round takes from the pool."""
    if config.self_rewarding.self_instruct_prompts:
        return config.self_rewarding.self_instruct_prompts
    from selftrain.data import load_train_prompts

    return len(load_train_prompts(config, iteration))


def needs_instructions(config: Config) -> bool:
    """True for the ifeval reward (instructions attached); an error for a reward whose metadata a
    model-written prompt cannot carry (an expected answer, test cases)."""
    from selftrain.data import required_metadata

    needed = required_metadata(config)
    if needed and "instruction_id_list" not in needed:
        raise InputError(f"config: self_rewarding.self_instruct: model-written prompts carry no metadata."
                         f"{needed[0]}, which reward_config ({config.reward_config.type}/"
                         f"{config.reward_config.rule_type}) needs")
    return bool(needed)


def held_out_texts(config: Config) -> set[str]:
    """The evaluation prompts (and the built-in judge set), normalized: a written prompt equal to one of
    them is dropped, so nothing evaluated is trained on."""
    from selftrain.data import load_eval_prompts, load_task_split
    from selftrain.self_instruct import normalized

    records = load_eval_prompts(config, "test")
    if not config.datasets and config.task.name == "ifeval" and config.self_rewarding.judge_eval_prompts:
        records = records + load_task_split(config, "judge_eval")
    return {normalized(r["prompt"]) for r in records if isinstance(r.get("prompt"), str)}


def request_jobs(config: Config, pool: list[dict], n: int, iteration: int, model_name: str, tokenizer) -> list[dict]:
    """One generation job per request (run_jobs' job shape), its shots drawn by `choose_shots`."""
    from selftrain.prompts import PromptSpec
    from selftrain.self_instruct import choose_shots, fewshot_prompt

    spec = PromptSpec(config.system_prompt, 0, "", config.use_chat_template)  # no task few-shot turns
    jobs = []
    for i in range(n):
        shots = choose_shots(pool, config.self_rewarding.self_instruct_shots, config.seed, iteration, i)
        prompt_text, messages = fewshot_prompt(tokenizer, shots, spec)
        jobs.append({"id": f"si{iteration:02d}-{i:06d}", "shots": [s["request"] for s in shots],
                     "shot_ids": [s["id"] for s in shots], "iteration": iteration, "generator": model_name,
                     "prompt_text": prompt_text, "_messages": messages})
    return jobs


def write_requests(config: Config, pool: list[dict], n: int, iteration: int, model_name: str, out: StageOutput) -> None:
    """The samples step: n replies into `out` (resumable), then its marker."""
    from selftrain.generation.jobs import open_backend, run_jobs_in_order, sampling_params, stage_seed
    from selftrain.prompts import PromptSpec

    backend, tokenizer = open_backend(config, model_name, PromptSpec.from_config(config),
                                      batch_size=config.batch_size, role="sample")
    with backend:
        jobs = request_jobs(config, pool, n, iteration, model_name, tokenizer)
        log(f"self-instruct: {n} requests, {config.self_rewarding.self_instruct_shots} seed examples each "
            f"(of {len(pool)}), written by {model_name} -> {out.path}")
        metrics = run_jobs_in_order(backend, jobs, out.path, sampling_params(config),
                                    stage_seed(config, iteration) + SELF_INSTRUCT_SEED)
    out.finish(config, {**metrics, "requested": n, "seed_prompts": len(pool)}, {"model": model_name})


def keep_requests(config: Config, pool: list[dict], n: int, iteration: int, samples: StageOutput,
                  out: StageOutput, model_name: str) -> dict:
    """The filter step: the usable, new requests with their instructions into `out`; the metrics."""
    from selftrain.records import read_jsonl, write_jsonl_atomic
    from selftrain.self_instruct import filter_requests

    written = read_jsonl(samples.path)
    kept, metrics = filter_requests(written, pool, seed=config.seed, iteration=iteration,
                                    attach=needs_instructions(config), held_out=held_out_texts(config))
    reasons = ", ".join(f"{k} {v}" for k, v in metrics["dropped"].items() if v) or "none"
    if not kept:
        raise InputError(f"{samples.path}: none of the {len(written)} requests {model_name} wrote was kept "
                         f"(dropped: {reasons}); write more (self_rewarding.self_instruct_prompts) or change the "
                         f"sampling, and delete {samples.marker or samples.path} to write them again")
    write_jsonl_atomic(out.path, kept)
    metrics = {"requested": n, "generated": len(written), **metrics, "shortfall": n - len(kept)}
    if len(kept) < n:
        metrics["note"] = f"only {len(kept)} of {n} requested prompts survived the checks and de-duplication"
    log(f"self-instruct: kept {len(kept)} of {len(written)} written requests (dropped: {reasons}) -> {out.path}")
    return metrics


def main(argv=None):
    from selftrain.cli import resolve_config
    from selftrain.self_instruct import check_shots, seed_pool

    args = parser().parse_args(argv)
    config = resolve_config(args, FLAGS)
    outputs = _outputs(args)
    samples, out = outputs["self_instruct_samples"], outputs["self_instruct"]
    if out.is_done():
        log(f"self_instruct: {out.marker} exists; nothing to do")
        return
    pool = seed_pool(config)  # a bad seed file stops here, before any model load or output
    needs_instructions(config)
    n = requested(config, args.iteration)
    check_shots(pool, config.self_rewarding.self_instruct_shots)
    model_name = args.model_name or generator_for(config, args.run_dir, args.iteration)
    if not samples.is_done():
        write_requests(config, pool, n, args.iteration, model_name, samples)
    metrics = keep_requests(config, pool, n, args.iteration, samples, out, model_name)
    out.finish(config, metrics, {"model": model_name, "input": str(samples.path)})
