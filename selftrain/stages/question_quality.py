"""question_quality.py: the seed's question-quality win-rate: are the clarifying questions better after training?

The model of iteration N (--model; default iteration N's checkpoint) drafts the test questions with
the draft prompt, as drafts.py drafts them for the base student (the same prompt, sampling and
request seeds, so with the same weights it writes the same drafts); the "before" questions are the
base student's test drafts (iteration 0's drafts). For each test question with a `Questions:` line on
both sides, the teacher backend (distill.teacher_model and distill.teacher_generation, as the teacher
stage opens them) judges which set of questions helps more, greedily, once with the before set as A
and once as B (prompt, strict verdict parsing and the figures: selftrain/question_quality.py).
A judge that cannot judge shows as unparsable verdicts and low position consistency, never as a
win-rate made up for it.

One script, three stages of iteration N, each resumable (a reply is on disk the moment it arrives)
and each with its marker:
  question_drafts    (JSONL) the model's test drafts: drafts.py's records
  question_verdicts  (JSONL) one judge reply per question and order: id (<question>|<order>), prompt_id,
                     order (before_A / after_A), judge, prompt_text, response, finish_reason, num_tokens,
                     verdict (A / B / null: unparsable), preferred (before / after / null)
  question_quality   (JSON) the figures (win-rate of after over before beside chance 0.5, counts,
                     position consistency, questions without a Questions: line) and one row per test
                     question: id, before and after (the questions, or null), outcome, verdicts
By hand (--output x.json) the first two are x.drafts.jsonl and x.verdicts.jsonl beside it.

  python question_quality.py --run_dir results/distill --iteration 3
  python question_quality.py --before data/student_drafts.jsonl --model results/distill/iter_03/model --output qq.json
"""
from __future__ import annotations

import json
from pathlib import Path

from selftrain.cli import base_parser, resolve_config, run
from selftrain.config import Config
from selftrain.distill import draft_shots, teacher_spec
from selftrain.errors import InputError
from selftrain.generation.base import SamplingParams
from selftrain.generation.jobs import open_backend, run_jobs_in_order, stage_seed
from selftrain.logging import log
from selftrain.models import resolve_model
from selftrain.prompts import PromptSpec, build_messages, render_prompt
from selftrain.question_quality import (ORDERS, clarifying_questions, judge_records, outcome, parse_verdict, preferred,
                                        summarize)
from selftrain.records import read_jsonl, write_jsonl_atomic
from selftrain.runs import Stage, finished_output, model_dir, stage_output
from selftrain.stages.drafts import draft_jobs, draft_metrics, run_drafts
from selftrain.stages.teacher import TEACHER_SEED, decide_teacher, read_drafts, resolve_teacher, teacher_config

# stage name, run-layout suffix, by-hand file beside --output x.json
STAGES = (("question_drafts", ".jsonl", ".drafts.jsonl"), ("question_verdicts", ".jsonl", ".verdicts.jsonl"),
          ("question_quality", ".json", ".json"))


def before_drafts(path, limit: int) -> list[dict]:
    """The base student's drafts of the test questions: the first `limit` (0: all)."""
    tests = [r for r in read_drafts(path) if r.get("split") == "test"]
    if not tests:
        raise InputError(f"{path}: holds no test-split draft (is this the drafts of iteration 0?)")
    return tests[:limit] if limit else tests


# --- the model's drafts: the draft prompt of drafts.py ---------------------------------------------

def draft_tests(config: Config, model_name: str, tests: list[dict], output_path) -> dict:
    """`model_name`'s drafts of the test questions into `output_path` (drafts.py's records, after the same worked
    drafts); the metrics."""
    spec = PromptSpec.from_config(config)
    shots = draft_shots(config)
    backend, tokenizer = open_backend(config, model_name, spec, batch_size=config.batch_size, role="sample")
    jobs = draft_jobs(config, model_name, {"test": tests}, tokenizer, shots)
    log(f"question quality: {model_name} drafts {len(jobs)} test questions -> {output_path}")
    metrics, rows = run_drafts(config, backend, jobs, output_path)
    metrics.update(draft_metrics(rows)["test"], with_questions=sum(clarifying_questions(r["response"]) is not None
                                                                    for r in rows),
                   draft_shots=[s["id"] for s in shots])
    return metrics


# --- the judge: the teacher backend ------------------------------------------------------------------

def judge_of(config: Config, run_dir) -> tuple[str, bool]:
    """The judge's name and whether it is a local model (else a server sent chat messages); checked
    before any draft is written or request sent."""
    if config.distill.dry_run:
        raise InputError("distill.dry_run: question_quality.py would draft and send judge requests; unset it "
                         "(DRY_RUN) to run it (nothing was drafted or sent)")
    judge, local = decide_teacher(config, run_dir, "question quality: judge")
    if local:
        resolve_model(judge)
    return judge, local


def judge_jobs(config: Config, pairs: list[tuple[dict, str, str]], tokenizer, judge: str) -> list[dict]:
    """Two requests per (question, before, after): the same sets in both positions."""
    spec = teacher_spec(config)
    jobs = []
    for question, before, after in pairs:
        for order, asked in judge_records(question, before, after).items():
            text = render_prompt(tokenizer, asked, spec) if tokenizer is not None else asked["prompt"]
            jobs.append({"id": f"{question['id']}|{order}", "prompt_id": question["id"], "order": order,
                         "judge": judge, "prompt_text": text, "_messages": build_messages(asked, spec)})
    return jobs


def judge_pairs(config: Config, judge: str, local: bool, pairs: list[tuple[dict, str, str]], output_path,
                iteration: int) -> dict:
    """The judge's verdicts on every pair, both orders, into `output_path`; the metrics."""
    from selftrain.generation import get_backend
    from selftrain.models import load_tokenizer

    if not pairs:  # nothing to compare: no judge is loaded or asked
        write_jsonl_atomic(output_path, [])
        return {"generated": 0, "requests": 0, "replies": 0, "unparsable": 0, "truncated": 0}
    tokenizer = load_tokenizer(judge) if local else None
    jobs = judge_jobs(config, pairs, tokenizer, judge)
    spec = teacher_spec(config)
    params = SamplingParams(0.0, 1.0, 0, config.distill.question_quality_max_tokens)  # a verdict, not a draw
    backend = get_backend(teacher_config(config), judge, spec, batch_size=config.batch_size, role="sample")
    log(f"question quality: judge {judge}: {len(pairs)} questions x {len(ORDERS)} orders -> {output_path}")
    with backend:
        metrics = run_jobs_in_order(backend, jobs, output_path, params, stage_seed(config, iteration) + TEACHER_SEED)
    rows = []
    for r in read_jsonl(output_path):
        verdict = parse_verdict(r["response"], r["finish_reason"])
        rows.append(dict(r, verdict=verdict, preferred=preferred(r["order"], verdict)))
    write_jsonl_atomic(output_path, rows)
    metrics.update(replies=len(rows), unparsable=sum(r["verdict"] is None for r in rows),
                   truncated=sum(r["finish_reason"] == "length" for r in rows))
    return metrics


# --- before vs after -----------------------------------------------------------------------------

def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def compare(tests: list[dict], after: dict[str, dict]) -> tuple[list[dict], list[tuple[dict, str, str]]]:
    """One row per test question (id, before, after: its questions or None, outcome: no_questions /
    identical / to be judged) and the (question, before, after) pairs to judge."""
    rows, pairs = [], []
    for t in tests:
        b, a = clarifying_questions(t["response"]), clarifying_questions(after[t["id"]]["response"])
        status = "no_questions" if b is None or a is None else "identical" if _same(b, a) else None
        rows.append({"id": t["id"], "before": b, "after": a, "outcome": status})
        if status is None:
            pairs.append((t, b, a))
    return rows, pairs


def results(rows: list[dict], verdict_rows: list[dict]) -> dict:
    """The figures and the per-question rows, each judged row with its verdicts and outcome."""
    by_question: dict[str, dict] = {}
    for v in verdict_rows:
        by_question.setdefault(v["prompt_id"], {})[v["order"]] = v["verdict"]
    outcomes, given = [], []
    for row in rows:
        if row["outcome"] is None:
            verdicts = by_question.pop(row["id"], {})
            if set(verdicts) != set(ORDERS):
                raise InputError(f"question quality: question {row['id']} has verdicts for {sorted(verdicts)}, "
                                 f"expected {', '.join(ORDERS)}")
            row.update(verdicts=verdicts, outcome=outcome(verdicts))
            outcomes.append(row["outcome"])
            given += [verdicts[order] for order in ORDERS]
    if by_question:
        raise InputError(f"question quality: the verdicts hold question {next(iter(by_question))}, which is not "
                         f"compared now ({len(by_question)} such): remove the verdicts and their marker to judge again")
    not_judged = {"questions": len(rows),
                  "no_questions_before": sum(r["before"] is None for r in rows),
                  "no_questions_after": sum(r["after"] is None for r in rows),
                  "not_compared": sum(r["outcome"] == "no_questions" for r in rows),
                  "identical": sum(r["outcome"] == "identical" for r in rows)}
    return {"summary": summarize(outcomes, given, not_judged), "results": rows}


# --- the stage -----------------------------------------------------------------------------------

def open_stages(args, before: Path) -> dict[str, Stage]:
    """The three stages' outputs (run layout, or beside --output) with their inputs."""
    if args.output and not args.output.endswith(".json"):
        raise InputError(f"--output {args.output}: expected a .json file (its drafts and verdicts go beside it)")
    stages, inputs = {}, {"drafts": before}
    for name, suffix, beside in STAGES:
        explicit = args.output.removesuffix(".json") + beside if args.output else None
        output = stage_output(name, explicit=explicit, run_dir=args.run_dir, iteration=args.iteration, default="",
                              suffix=suffix)
        if output.path.resolve() == before.resolve():
            raise InputError(f"{before}: the {name} output would overwrite the drafts; give another --output")
        stages[name] = Stage(name, dict(inputs), output)
        inputs[name] = output.path
    return stages


def measure(config: Config, args, model_name: str, before: Path, stages: dict[str, Stage]) -> dict:
    """The three stages in order, each skipped when its marker exists; the figures."""
    tests = before_drafts(before, config.distill.question_quality_questions)
    judge, local = judge_of(config, args.run_dir)
    config = resolve_teacher(config)  # the judge's backend decided: what it runs with and the markers record
    drafts, verdicts, final = (stages[name] for name, _, _ in STAGES)
    if not drafts.output.is_done():
        drafts.finish(config, draft_tests(config, model_name, tests, drafts.path), {"model": model_name})
    after = {r["id"]: r for r in read_jsonl(drafts.path)}
    missing = [t["id"] for t in tests if t["id"] not in after]
    if missing:
        raise InputError(f"{drafts.path}: no draft of test question {missing[0]} ({len(missing)} missing): "
                         f"its stage ran on other questions; remove it and its marker to redraft")
    rows, pairs = compare(tests, after)
    if not verdicts.output.is_done():
        verdicts.finish(config, judge_pairs(config, judge, local, pairs, verdicts.path, args.iteration),
                        {"judge": judge})
    out = results(rows, read_jsonl(verdicts.path, allow_empty=True))
    s = out["summary"]
    log(f"question quality: win-rate of after over before {s['win_rate']} (chance {s['chance']}) on {s['decided']} "
        f"decided of {s['judged']} judged questions: after {s['after_wins']}, before {s['before_wins']}, "
        f"inconsistent {s['inconsistent']}, unparsable {s['unparsable']}; position consistency "
        f"{s['position_consistency']}; of {s['questions']}: no Questions: line before {s['no_questions_before']}, "
        f"after {s['no_questions_after']}; identical {s['identical']}")
    final.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.path.with_name(final.path.name + ".tmp")
    tmp.write_text(json.dumps({**s, "model": model_name, "judge": judge, "before": str(before),
                               "results": out["results"]}, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(final.path)
    final.finish(config, s, {"model": model_name, "judge": judge})
    return s


def main(argv=None):
    p = base_parser(__doc__)
    p.add_argument("--model", help="the model that drafts (default: iteration N's checkpoint; the base model for N=0)")
    p.add_argument("--before", help="the base student's drafts JSONL (default in a run: iteration 0's drafts)")
    p.add_argument("--output", help="results JSON (by hand; its drafts and verdicts JSONL go beside it)")
    args = p.parse_args(argv)
    config = resolve_config(args, {})
    if not args.run_dir and not (args.before and args.output and args.model):
        raise InputError("question_quality.py: give --run_dir, or --before, --model and --output")
    before = Path(args.before) if args.before else finished_output(args.run_dir, 0, "drafts")
    stages = open_stages(args, before)
    if stages["question_quality"].done():
        return
    if args.model:
        model_name = args.model
    else:
        model_name = config.base_model_path if args.iteration == 0 else str(model_dir(args.run_dir, args.iteration))
    resolve_model(model_name)  # a missing checkpoint is a one-line error before any work
    measure(config, args, model_name, before, stages)


if __name__ == "__main__":
    run(main)
