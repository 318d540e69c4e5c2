"""create_data.py: build STaR training data for one iteration.

Steps (all by default, or a subset with --steps):
  generate     sample --num_samples replies per prompt (K few-shot examples, chat template)
  judge        score every reply (rule-based math by default)
  rationalize  hint the answer for prompts no sample solved; keep rationales that reach it
  select       correct samples + kept rationales -> training set (<= max_per_prompt per prompt)

By hand, `--output` is the final training set (default data/star_iter{N}_train.jsonl)
and the intermediate files sit beside it; in a run folder (--run_dir) each step
writes its timestamped file and completion marker under iter_NN/. Every step
resumes: rerunning after a crash skips the records already written.

  python create_data.py --iteration 1 --model_name smollm2-135m --k 3 \\
      --batch_size 32 --output data/star_iter1_train.jsonl --max_samples 100

Sharded generation (one SLURM array task per shard, see slurm/generate_array.sh):
  --steps generate --shard I --num_shards S   generate the I-th of S contiguous slices of
                                              the round's prompts (0 <= I < S)
  --merge_shards S                            join the S finished shards into the step's
                                              output: the same file, record for record and
                                              in the same order, as one unsharded run
"""
from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

from selftrain.cli import base_parser, resolve_config, run
from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.records import read_jsonl
from selftrain.runs import StageOutput, finished_output, generator_for, stage_output

STEPS = ("generate", "judge", "rationalize", "select")
FLAGS = {"k": "k", "batch_size": "batch_size", "max_samples": "max_samples",
         "num_samples": "num_generations_per_prompt", "temperature": "temperature", "top_p": "top_p",
         "max_new_tokens": "max_new_tokens", "seed": "seed"}


def parser():
    p = base_parser(__doc__)
    p.add_argument("--model_name", help="generator (default: base model for iteration 1, the previous "
                                        "iteration's model after that)")
    p.add_argument("--k", type=int, help="few-shot examples in the prompt (config: k)")
    p.add_argument("--batch_size", type=int, help="generation rows in flight (config: batch_size)")
    p.add_argument("--output", help="output JSONL (default: data/star_iter{N}_train.jsonl)")
    p.add_argument("--max_samples", type=int, help="limit the number of training prompts")
    p.add_argument("--num_samples", type=int, help="samples per prompt (config: num_generations_per_prompt)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top_p", type=float)
    p.add_argument("--max_new_tokens", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", help=f"comma-separated subset of {','.join(STEPS)} (default: all of them; "
                                   "without rationalize for method: expert_iteration)")
    p.add_argument("--shard", type=int, help="with --steps generate: generate only slice I of --num_shards")
    p.add_argument("--num_shards", type=int, help="number of generation shards")
    p.add_argument("--merge_shards", type=int, metavar="S", help="merge S finished generation shards")
    return p


def shard_slice(items: list, shard: int, num_shards: int) -> list:
    """The shard-th of num_shards contiguous, nearly equal slices (concatenated in order: all of `items`)."""
    bounds = [len(items) * i // num_shards for i in range(num_shards + 1)]
    return items[bounds[shard]:bounds[shard + 1]]


def _shard_output(args, shard: int, num_shards: int) -> StageOutput:
    name = f"samples-shard-{shard}-of-{num_shards}"
    if args.run_dir and not args.output:
        return stage_output(name, explicit=None, run_dir=args.run_dir, iteration=args.iteration, default="")
    final = Path(args.output or f"data/star_iter{args.iteration}_train.jsonl")
    return StageOutput(Path(f"{final.with_suffix('')}.{name}.jsonl"), None)


def _outputs(args, steps: list[str]) -> dict[str, StageOutput]:
    """Where each step writes. By hand: beside --output, which is the last step's file."""
    n = args.iteration
    if args.run_dir and not args.output:
        return {s: stage_output("train" if s == "select" else _stage_name(s), explicit=None,
                                run_dir=args.run_dir, iteration=n, default="") for s in STEPS}
    final = Path(args.output or f"data/star_iter{n}_train.jsonl")
    stem = final.with_suffix("")
    paths = {"generate": f"{stem}.samples.jsonl", "judge": f"{stem}.judged.jsonl",
             "rationalize": f"{stem}.rationales.jsonl", "select": str(final)}
    paths[steps[-1]] = str(final)
    return {s: StageOutput(Path(p), None) for s, p in paths.items()}


def _stage_name(step: str) -> str:
    return {"generate": "samples", "judge": "judged", "rationalize": "rationales"}[step]


def _input_of(step: str, outputs: dict[str, StageOutput], args) -> Path:
    """A step reads its predecessor's output: the marker's file in a run, the sibling file by hand."""
    previous = {"judge": "generate", "rationalize": "judge", "select": "judge"}[step]
    out = outputs[previous]
    if args.run_dir and not args.output:
        return finished_output(args.run_dir, args.iteration, _stage_name(previous))
    if not out.path.is_file():
        raise InputError(f"{out.path}: missing: run the '{previous}' step first")
    return out.path


class _Generator:
    """The generation backend, opened at most once for the generate and rationalize steps
    and closed (a launched server stopped) when create_data ends, however it ends."""

    def __init__(self, name: str, config, stack: ExitStack):
        self.name, self.config, self.stack, self._opened = name, config, stack, None

    def get(self):
        """(backend, the student's tokenizer)."""
        if self._opened is None:
            from selftrain.generation.jobs import open_backend
            from selftrain.prompts import PromptSpec

            backend, tokenizer = open_backend(self.config, self.name, PromptSpec.from_config(self.config),
                                              batch_size=self.config.batch_size, role="sample")
            self._opened = self.stack.enter_context(backend), tokenizer
        return self._opened


def round_prompts(args, config) -> list[dict]:
    """The round's prompts: the pool's window, or what M_{t-1} wrote (self_rewarding.self_instruct, t >= 2)."""
    from selftrain.data import load_train_prompts
    from selftrain.self_instruct import written_prompts

    written = written_prompts(config, args.run_dir, args.iteration)
    return written if written is not None else load_train_prompts(config, args.iteration)


def _step_generate(args, config, outputs, generator: _Generator) -> None:
    from selftrain.data import describe_round
    from selftrain.stages.generate import generate_samples

    prompts = round_prompts(args, config)  # validated before anything is written
    out, extra = outputs["generate"], {}
    if args.shard is not None:
        out = _shard_output(args, args.shard, args.num_shards)
        if out.is_done():
            log(f"generate: {out.marker} exists; nothing to do")
            return
        extra = {"shard": args.shard, "num_shards": args.num_shards, "round_prompts": len(prompts)}
        prompts = shard_slice(prompts, args.shard, args.num_shards)
    backend, tokenizer = generator.get()  # a missing model is an input error, before any output exists
    metrics = generate_samples(config, generator.name, prompts, out.path, args.iteration, backend, tokenizer)
    out.finish(config, {**metrics, **extra, "round": describe_round(config, prompts)}, {"model": generator.name})


def merge_shards(args, config, out: StageOutput, num_shards: int) -> None:
    """Join finished shards into the generate step's output, in canonical order, with its marker."""
    from selftrain.data import describe_round
    from selftrain.records import JsonlAppender, reorder_jsonl
    from selftrain.stages.generate import sample_ids

    prompts = round_prompts(args, config)
    shards = [_shard_output(args, i, num_shards) for i in range(num_shards)]
    markers = []
    for shard in shards:
        if shard.marker is not None and not shard.is_done():
            raise InputError(f"{shard.marker}: missing: shard not finished (run it, then merge)")
        if not shard.path.is_file():
            raise InputError(f"{shard.path}: missing: shard not generated")
        markers.append(json.loads(shard.marker.read_text()) if shard.marker else {"metrics": {}})
    out.path.unlink(missing_ok=True)  # a merge interrupted before its marker starts over
    with JsonlAppender(out.path) as appender:
        for shard in shards:
            for record in read_jsonl(shard.path):
                appender.write(record)
    reorder_jsonl(out.path, sample_ids(prompts, config.num_generations_per_prompt))  # checks nothing is missing
    total = {key: sum(m["metrics"].get(key, 0) for m in markers)
             for key in ("generated", "skipped_existing", "generated_tokens", "samples", "requests", "completions",
                         "prompt_tokens")}
    seconds = [m["metrics"].get("seconds", 0) for m in markers]
    out.finish(config, {**total, "prompts": len(prompts), "merged_shards": num_shards,
                        "shard_seconds": seconds, "round": describe_round(config, prompts)},
               {"model": markers[0].get("model")})
    log(f"merged {num_shards} shards into {out.path}")


def _step_judge(args, config, outputs, generator: _Generator) -> None:
    from selftrain.stages.judge import judge_file

    out = outputs["judge"]
    out.finish(config, judge_file(config, _input_of("judge", outputs, args), out.path, aside=out.marker is None))


def _step_rationalize(args, config, outputs, generator: _Generator) -> None:
    from selftrain.stages.rationalize import rationalization_todo, rationalize_file

    judged_path = _input_of("rationalize", outputs, args)
    needed = rationalization_todo(config, read_jsonl(judged_path))[0]
    backend, tokenizer = generator.get() if needed else (None, None)
    out = outputs["rationalize"]
    metrics = rationalize_file(config, generator.name, judged_path, out.path, args.iteration, backend, tokenizer)
    out.finish(config, metrics, {"model": generator.name})


def _step_select(args, config, outputs, generator: _Generator) -> None:
    from selftrain.stages.select import write_training_set

    rationales = None
    if "rationalize" in outputs and config.method == "star":
        rationales = outputs["rationalize"].path
        if args.run_dir and not args.output:
            rationales = finished_output(args.run_dir, args.iteration, "rationales")
        elif not rationales.is_file():
            rationales = None
    out = outputs["select"]
    out.finish(config, write_training_set(config, _input_of("select", outputs, args), rationales, out.path))


def _check_shard_args(args, steps: list[str]) -> None:
    if args.merge_shards is not None:
        if args.merge_shards < 1 or args.shard is not None:
            raise InputError("--merge_shards S: S >= 1, and without --shard")
        args.steps, steps[:] = "generate", ["generate"]
        return
    if args.shard is None and args.num_shards is None:
        return
    if args.shard is None or args.num_shards is None:
        raise InputError("--shard and --num_shards go together")
    if not 0 <= args.shard < args.num_shards:
        raise InputError(f"--shard {args.shard}: must be in 0..{args.num_shards - 1} (--num_shards {args.num_shards})")
    if steps != ["generate"]:
        raise InputError("--shard splits the generate step only: add --steps generate")


STEP_FUNCTIONS = {"generate": _step_generate, "judge": _step_judge,
                  "rationalize": _step_rationalize, "select": _step_select}


def main(argv=None):
    args = parser().parse_args(argv)
    steps = [s.strip() for s in (args.steps or ",".join(STEPS)).split(",") if s.strip()]
    for s in steps:
        if s not in STEPS:
            raise InputError(f"--steps: unknown step {s!r} (expected some of {', '.join(STEPS)})")
    steps = [s for s in STEPS if s in steps]  # always in pipeline order
    _check_shard_args(args, steps)
    config = resolve_config(args, FLAGS)
    if config.method == "expert_iteration" and args.steps is None:
        steps.remove("rationalize")  # Expert Iteration is STaR without rationalization
    outputs = _outputs(args, steps)
    if args.merge_shards is not None:
        if outputs["generate"].is_done():
            log(f"generate: {outputs['generate'].marker} exists; nothing to merge")
        else:
            merge_shards(args, config, outputs["generate"], args.merge_shards)
        return
    with ExitStack() as stack:
        generator = _Generator(args.model_name or generator_for(config, args.run_dir, args.iteration), config, stack)
        for step in steps:
            if outputs[step].is_done():
                log(f"{step}: {outputs[step].marker} exists; nothing to do")
                continue
            STEP_FUNCTIONS[step](args, config, outputs, generator)


if __name__ == "__main__":
    run(main)
