"""ift_data.py and eft_data.py: the seed data M1 is trained on (Self-Rewarding, paper §3.1.1).

IFT (instruction fine-tuning) examples are instruction -> response pairs; EFT (evaluation
fine-tuning) examples are LLM-as-a-judge examples: the rubric prompt about one reply -> a short
justification ending with `Score: N`. Both are written in train.py's format (`prompt_text` rendered
by the one prompt builder, `response`, `prompt_spec`), so M1 = train.py on both files.

From a file (`self_rewarding.ift_file` / `eft_file`, or --data_path):
  IFT  JSONL or a JSON list of {prompt, response}, {messages: [..., {role: assistant}]} or ShareGPT's
       {conversations: [{from: human, value}, {from: gpt, value}]} (the seed's data/seed.json)
  EFT  {prompt, response, score (integer 0..5)[, justification]}; without a justification the target
       is `Score: N` alone (AutoAlign's EFT targets)
Offline default, from the built-in ifeval task and the model being trained (M0), each step resumable
and with its own marker:
  <x>_samples  `<x>_samples` replies per prompt of the task's IFT / EFT split (sampled)
  <x>_judged   every reply checked with the ifeval reward (lm-eval's IFEval checkers)
  <x>          IFT: the replies that follow every instruction (rejection sampling; at most
               max_per_prompt per prompt, duplicates and cut-off replies dropped)
               EFT: every reply's rubric prompt -> the justification of its rule-checked score
               (self_rewarding.truth_score), in the judge's order (judge_justification: the checks
               first, the score first, or the score alone); balanced over the scores 0..5
               (eft_balance: score), or every reply with a prompt's replies together (prompt); with
               eft_from_ift the IFT step's judged replies too (no extra generation); eft_repeats
               copies of each
This EFT differs from the paper's, which keeps M_SFT's own judgements when their ranking agrees with
human rankings: here the targets are right by construction (docs/methods/self-rewarding.md).

  python ift_data.py --run_dir results/self_rewarding --iteration 1
  python eft_data.py --data_path data/eft.jsonl --output data/eft.train.jsonl
"""
from __future__ import annotations

import dataclasses
import json
import random
import statistics
from collections import defaultdict
from pathlib import Path

from selftrain.config import Config
from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.prompts import PromptSpec, render_prompt
from selftrain.records import iter_jsonl, read_jsonl, validate_prompt_record, write_jsonl_atomic
from selftrain.runs import StageOutput, generator_for, stage_output
from selftrain.self_rewarding import (SCORES, check_lines, cut_off, judge_prompt_record, judgement_text, justification,
                                      same_replies, truth_score)

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def read_records(path) -> list[tuple[int, dict]]:
    """(line or item number, object) of a JSONL file or a JSON file holding a list of objects."""
    path = Path(path)
    if path.suffix != ".json":
        return list(iter_jsonl(path))
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise InputError(f"{path}: expected a JSON list of objects")
    return list(enumerate(data, 1))


def ift_pair(obj: dict, where: str) -> tuple[dict, str]:
    """(prompt record for the prompt builder, response) of one IFT example in any accepted shape."""
    if "conversations" in obj:
        turns = obj["conversations"]
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise InputError(f"{where}: conversations: expected a list of {{from, value}}")
        try:
            obj = {"messages": [{"role": SHAREGPT_ROLES[t.get("from")], "content": t.get("value")} for t in turns]}
        except KeyError:
            raise InputError(f"{where}: conversations: 'from' must be one of {', '.join(SHAREGPT_ROLES)}") from None
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or len(messages) < 2 or not isinstance(messages[-1], dict) \
                or messages[-1].get("role") != "assistant":
            raise InputError(f"{where}: messages: the last message must be the assistant's response")
        response = messages[-1].get("content")
        path, line = where.rsplit(":", 1)
        prompt = validate_prompt_record({"messages": messages[:-1]}, path, int(line))
    else:
        if not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
            raise InputError(f"{where}: prompt: missing or empty (expected prompt/response, messages or conversations)")
        response, prompt = obj.get("response"), {"prompt": obj["prompt"]}
    if not isinstance(response, str) or not response.strip():
        raise InputError(f"{where}: response: missing or empty")
    return prompt, response


def eft_example(obj: dict, where: str) -> tuple[dict, int, list[str]]:
    """(candidate record to judge, its score, the justification's lines) of one EFT example."""
    if "conversations" in obj or "messages" in obj:
        raise InputError(f"{where}: this is an IFT example (conversations/messages); an EFT example is "
                         f"{{prompt, response, score}}: make them with eft_data.py or scripts/eft_data_prepare.sh")
    for key in ("prompt", "response"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise InputError(f"{where}: {key}: missing or empty")
    score = obj.get("score")
    if isinstance(score, float) and score.is_integer():
        score = int(score)
    if isinstance(score, bool) or not isinstance(score, int) or score not in SCORES:
        raise InputError(f"{where}: score: {'missing' if score is None else repr(score)} (an integer 0..5 is needed)")
    note = obj.get("justification", "")
    if not isinstance(note, str):
        raise InputError(f"{where}: justification: expected a string")
    return {"prompt": obj["prompt"], "response": obj["response"]}, score, note.strip().splitlines()


def train_row(tokenizer, spec: PromptSpec, record_id: str, prompt: dict, response: str, **extra) -> dict:
    return {"id": record_id, "prompt_id": record_id, "prompt_text": render_prompt(tokenizer, prompt, spec),
            "response": response, **extra, "prompt_spec": spec.to_dict()}


def from_file(config: Config, kind: str, path, model_name: str, output_path) -> dict:
    """An IFT or EFT file in train.py's format; every line checked before anything is written."""
    from selftrain.judging import load_template
    from selftrain.models import load_tokenizer

    spec = PromptSpec.from_config(config)
    items = []
    for lineno, obj in read_records(path):
        where = f"{path}:{lineno}"
        items.append((lineno, ift_pair(obj, where) if kind == "ift" else eft_example(obj, where)))
    if not items:
        raise InputError(f"{path}: file is empty (no examples)")
    tokenizer, template = load_tokenizer(model_name), load_template(config.self_rewarding.judge_template)
    stem = Path(path).stem
    rows = []
    for lineno, item in items:
        prompt, target = item[:2]
        if kind == "eft":  # the target in the judge's order (self_rewarding.judge_justification)
            prompt, target = judge_prompt_record(template, item[0]), judgement_text(
                item[1], item[2], config.self_rewarding.judge_justification)
        rows.append(train_row(tokenizer, spec, f"{kind}-{stem}-{lineno:06d}", prompt, target, source=str(path)))
    write_jsonl_atomic(output_path, rows)
    log(f"{kind}: {len(rows)} examples from {path} -> {output_path}")
    return {"train_examples": len(rows), "source": str(path)}


def balanced_by_score(config: Config, judged: list[dict]) -> tuple[list[tuple[dict, int]], dict]:
    """(judged reply, its truth score) pairs, each score 0..5 capped (`eft_max_per_score`, default the
    median size of the non-empty scores), the replies of a score chosen by a seeded shuffle."""
    by_score = defaultdict(list)
    for record in judged:
        by_score[truth_score(record)].append(record)
    cap = config.self_rewarding.eft_max_per_score or int(statistics.median(len(r) for r in by_score.values()))
    kept = []
    for score in sorted(by_score):
        chosen = list(by_score[score])
        random.Random(f"{config.seed}:eft:{score}").shuffle(chosen)
        kept += [(record, score) for record in sorted(chosen[:cap], key=lambda r: r["id"])]
    return kept, {"train_examples": len(kept), "cap": cap,
                  "per_score_before": {str(s): len(by_score.get(s, [])) for s in SCORES},
                  "per_score": {str(s): min(len(by_score.get(s, [])), cap) for s in SCORES}}


def by_prompt(judged: list[dict]) -> tuple[list[tuple[dict, int]], dict]:
    """Every judged reply with its truth score, a prompt's replies together (`eft_balance: prompt`): beside
    one another, replies to the same request that score differently teach the judge to read the reply,
    where a set balanced over scores across prompts teaches which kinds of request usually pass. A reply
    whose text repeats another of its prompt is kept once."""
    groups = same_replies(judged)
    kept = [(copies[0], truth_score(copies[0])) for replies in groups.values() for copies in replies.values()]
    contrasts = sum(len({truth_score(copies[0]) for copies in replies.values()}) > 1 for replies in groups.values())
    return kept, {"train_examples": len(kept), "prompts": len(groups), "prompts_with_contrast": contrasts,
                  "duplicates_dropped": len(judged) - len(kept),
                  "per_score": {str(s): sum(score == s for _, score in kept) for s in SCORES}}


def capped_cut_off(judged: list[dict], cap: int) -> tuple[list[dict], int]:
    """The judged replies with at most `cap` cut-off ones per prompt (the first by id; -1: every one), and
    how many were dropped (`eft_max_cut_off`)."""
    if cap < 0:
        return judged, 0
    cut_ids = defaultdict(list)
    for record in judged:
        if cut_off(record):
            cut_ids[record["prompt_id"]].append(record["id"])
    dropped = {i for ids in cut_ids.values() for i in sorted(ids)[cap:]}
    return [r for r in judged if r["id"] not in dropped], len(dropped)


def eft_selection(config: Config, judged: list[dict]) -> tuple[list[tuple[dict, int]], dict]:
    judged, dropped = capped_cut_off(judged, config.self_rewarding.eft_max_cut_off)
    if config.self_rewarding.eft_balance == "prompt":
        kept, metrics = by_prompt(judged)
    else:
        kept, metrics = balanced_by_score(config, judged)
    return kept, {**metrics, "cut_off_dropped": dropped}


def eft_rows(config: Config, kept: list[tuple[dict, int]], tokenizer) -> list[dict]:
    """EFT examples in train.py's format: the rubric prompt about the reply -> its justification, in the
    judge's order (`judge_justification`); each `eft_repeats` times (ids `<id>#<k>` after the first)."""
    from selftrain.judging import load_template

    sr = config.self_rewarding
    template, spec = load_template(sr.judge_template), PromptSpec.from_config(config)
    rows = [train_row(tokenizer, spec, record["id"], judge_prompt_record(template, record),
                      justification(record, sr.judge_justification), metadata={"true_score": score})
            for record, score in kept]
    return rows + [dict(row, id=f"{row['id']}#{k}") for k in range(1, sr.eft_repeats) for row in rows]


def raw_ift(kept: list[dict], judged: list[dict]) -> list[dict]:
    """Kept IFT replies as ShareGPT conversations (the seed's data/seed.json), for ift.sh's DATA_PATH."""
    prompts = {r["id"]: r["prompt"] for r in judged}
    return [{"id": r["id"], "conversations": [{"from": "human", "value": prompts[r["id"]]},
                                              {"from": "gpt", "value": r["response"]}]} for r in kept]


def raw_eft(kept: list[tuple[dict, int]]) -> list[dict]:
    """EFT examples in the EFT file format, for eft.sh's DATA_PATH."""
    return [{"id": r["id"], "prompt": r["prompt"], "response": r["response"], "score": score,
             "justification": "\n".join(check_lines(r))} for r, score in kept]


def write_json_atomic(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _outputs(args, kind: str) -> dict[str, StageOutput]:
    """Where each step writes: the run layout (<kind>_samples, <kind>_judged, <kind>), or beside --output."""
    names = {"generate": f"{kind}_samples", "judge": f"{kind}_judged", "build": kind}
    if args.run_dir and not args.output:
        return {step: stage_output(name, explicit=None, run_dir=args.run_dir, iteration=args.iteration, default="")
                for step, name in names.items()}
    final = Path(args.output or f"data/{kind}_iter{args.iteration}.jsonl")
    stem = final.with_suffix("")
    return {"generate": StageOutput(Path(f"{stem}.samples.jsonl"), None),
            "judge": StageOutput(Path(f"{stem}.judged.jsonl"), None), "build": StageOutput(final, None)}


def sampled_and_judged(args, config: Config, kind: str, model_name: str, outputs: dict[str, StageOutput]) -> Path:
    """The `generate` and `judge` steps on the task's `kind` split; the judged file."""
    from selftrain.data import load_task_split
    from selftrain.generation.jobs import open_backend
    from selftrain.stages.generate import generate_samples
    from selftrain.stages.judge import judge_file

    samples, judged = outputs["generate"], outputs["judge"]
    if not samples.is_done():
        prompts = load_task_split(config, kind)
        n = getattr(config.self_rewarding, f"{kind}_samples")
        sampling = dataclasses.replace(config, num_generations_per_prompt=n)
        backend, tokenizer = open_backend(config, model_name, PromptSpec.from_config(config),
                                          batch_size=config.batch_size, role="sample")
        with backend:
            metrics = generate_samples(sampling, model_name, prompts, samples.path, args.iteration, backend, tokenizer)
        samples.finish(config, metrics, {"model": model_name, "split": kind})
    if not judged.is_done():
        judged.finish(config, judge_file(config, samples.path, judged.path, aside=judged.marker is None),
                      {"input": str(samples.path)})
    return judged.path


def build(config: Config, kind: str, model_name: str, judged_path: Path, out: StageOutput,
          more_judged: Path | None = None) -> dict:
    """The step's training file; an output named *.json gets the raw file format instead (seed scripts).
    EFT also takes the replies of `more_judged` (the IFT stage's, `eft_from_ift`)."""
    from selftrain.models import load_tokenizer
    from selftrain.stages.select import select_examples

    judged = read_jsonl(judged_path) + (read_jsonl(more_judged) if more_judged else [])
    if kind == "ift":
        kept, metrics = select_examples(dataclasses.replace(config, filter_strategy="correct", balance_by=""),
                                        judged, [])
        spec = PromptSpec.from_config(config).to_dict()
        rows = raw_ift(kept, judged) if out.path.suffix == ".json" else [dict(r, prompt_spec=spec) for r in kept]
    else:
        kept, metrics = eft_selection(config, judged)
        metrics = {**metrics, "repeats": config.self_rewarding.eft_repeats,
                   **({"from_ift_judged": str(more_judged)} if more_judged else {})}
        rows = raw_eft(kept) if out.path.suffix == ".json" else eft_rows(config, kept, load_tokenizer(model_name))
    if out.path.suffix == ".json":
        write_json_atomic(out.path, rows)
    else:
        write_jsonl_atomic(out.path, rows)
    log(f"{kind}: {len(rows)} examples -> {out.path} ({metrics})")
    return metrics


def parser(kind: str):
    from selftrain.cli import base_parser

    p = base_parser(__doc__)
    p.add_argument("--data_path", help=f"an {kind.upper()} file (config: self_rewarding.{kind}_file; "
                                       f"empty: built from the base model and the ifeval task)")
    p.add_argument("--model_name", help="the model that writes the replies and whose tokenizer renders the "
                                        "prompts (default: the base model)")
    p.add_argument("--output", help=f"{kind.upper()} training file (default in a run: iter_NN/{kind}_<ts>.jsonl)")
    if kind == "eft":
        p.add_argument("--ift_judged", help="the IFT replies judged by ift_data.py, EFT examples too with "
                                            "self_rewarding.eft_from_ift (default in a run: iter_NN/ift_judged)")
    return p


def main_for(kind: str, argv=None):
    from selftrain.cli import resolve_config

    args = parser(kind).parse_args(argv)
    config = resolve_config(args, {"data_path": f"self_rewarding.{kind}_file"})
    outputs = _outputs(args, kind)
    out = outputs["build"]
    if out.is_done():
        log(f"{kind}: {out.marker} exists; nothing to do")
        return
    model_name = args.model_name or generator_for(config, args.run_dir, args.iteration)
    path = getattr(config.self_rewarding, f"{kind}_file")
    if path:
        out.finish(config, from_file(config, kind, path, model_name, out.path), {"model": model_name})
        return
    if config.task.name != "ifeval":
        raise InputError(f"config: self_rewarding.{kind}_file: needed: the built-in {kind.upper()} prompts come "
                         f"from task ifeval (task.name is {config.task.name!r})")
    more = ift_judged(args, config) if kind == "eft" and config.self_rewarding.eft_from_ift else None
    judged = sampled_and_judged(args, config, kind, model_name, outputs)
    out.finish(config, build(config, kind, model_name, judged, out, more), {"model": model_name, "input": str(judged)})


def ift_judged(args, config: Config) -> Path:
    """The IFT stage's rule-checked replies (`eft_from_ift`): --ift_judged, or the run's ift_judged stage."""
    from selftrain.runs import finished_output

    if args.ift_judged:
        if not Path(args.ift_judged).is_file():
            raise InputError(f"{args.ift_judged}: file not found (--ift_judged)")
        return Path(args.ift_judged)
    if not args.run_dir:
        raise InputError("self_rewarding.eft_from_ift: give --ift_judged (the IFT replies judged by ift_data.py) "
                         "or --run_dir")
    if config.self_rewarding.ift_file:
        raise InputError("self_rewarding.eft_from_ift: IFT comes from ift_file, so there are no rule-checked IFT "
                         "replies to judge; set eft_from_ift: false")
    return finished_output(args.run_dir, args.iteration, "ift_judged")


def main_ift(argv=None):
    main_for("ift", argv)


def main_eft(argv=None):
    main_for("eft", argv)
