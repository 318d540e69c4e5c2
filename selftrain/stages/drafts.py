"""drafts.py: the student's drafts (seed 003): `Answer: <Yes/No> - <brief reasoning>` then `Questions: ...`.

The student (the base model) drafts every question the run uses, in one resumable stage: the
training questions the teacher will see (`distill.train_samples`), the dev questions a trained
teacher learns from (`distill.teacher_model: trained`) and the test questions (Track B's and
Phase C's prompt holds the draft, so evaluation needs the student's draft of each test question,
written the same way). With `distill.draft_shots` N > 0 every draft prompt is preceded by the same N
worked drafts of dev questions (the seed's format shown by example), their ids in the marker's metrics
(`draft_shots`). Output records (appended one by one):
    id (the question's id), split, prompt, metadata (expected_answer, facts, decomposition),
    prompt_text (the rendered draft prompt), response (the draft), finish_reason, num_tokens,
    generator, draft_answer ("yes" / "no" / null: no clear answer).

  python drafts.py --run_dir results/distill --iteration 0
"""
from __future__ import annotations

from selftrain.cli import base_parser, resolve_config, run
from selftrain.config import Config
from selftrain.distill import draft_answer, draft_record, draft_shots, drafted_questions
from selftrain.generation.base import SamplingParams
from selftrain.generation.jobs import open_backend, run_jobs_in_order, stage_seed
from selftrain.logging import log
from selftrain.metrics import counts
from selftrain.prompts import PromptSpec, build_messages, render_prompt
from selftrain.records import read_jsonl, write_jsonl_atomic
from selftrain.runs import open_stage


def draft_jobs(config: Config, model_name: str, by_split: dict[str, list[dict]], tokenizer,
               shots: list[dict]) -> list[dict]:
    """One generation job per question ({split: records}): the draft prompt after the worked drafts of `shots`
    (distill.draft_shots), rendered for `tokenizer`."""
    spec = PromptSpec.from_config(config)
    jobs = []
    for split, records in by_split.items():
        for record in records:
            asked = draft_record(record, shots)
            jobs.append({"id": record["id"], "split": split, "prompt": record["prompt"], "metadata": record["metadata"],
                         "generator": model_name, "prompt_text": render_prompt(tokenizer, asked, spec),
                         "_messages": build_messages(asked, spec)})
    return jobs


def draft_params(config: Config) -> SamplingParams:
    d = config.distill
    return SamplingParams(d.draft_temperature, config.top_p, config.top_k, d.draft_max_new_tokens)


def run_drafts(config: Config, backend, jobs: list[dict], output_path) -> tuple[dict, list[dict]]:
    """Draft every job into `output_path` (resumable), each row with its `draft_answer`; the generation
    metrics and the rows. The seed is iteration 0's for every model, so that with sampling on two models
    draw the same random stream per question."""
    with backend:
        metrics = run_jobs_in_order(backend, jobs, output_path, draft_params(config), stage_seed(config, 0))
    rows = [dict(r, draft_answer=draft_answer(r["response"])) for r in read_jsonl(output_path)]
    write_jsonl_atomic(output_path, rows)
    return metrics, rows


def write_drafts(config: Config, model_name: str, output_path) -> dict:
    by_split = drafted_questions(config)
    shots = draft_shots(config)
    backend, tokenizer = open_backend(config, model_name, PromptSpec.from_config(config), batch_size=config.batch_size,
                                      role="sample")
    jobs = draft_jobs(config, model_name, by_split, tokenizer, shots)
    log(f"drafts: {', '.join(f'{len(v)} {k}' for k, v in by_split.items())} questions -> {output_path}, "
        f"{len(shots)} worked drafts shown first")
    metrics, rows = run_drafts(config, backend, jobs, output_path)
    metrics.update(draft_metrics(rows), draft_shots=[s["id"] for s in shots])
    log(f"drafts: {metrics}")
    return metrics


def draft_metrics(rows: list[dict]) -> dict:
    """Per split: questions, the drafts' accuracy, their yes/no/unclear shares, the truth's class counts."""
    from selftrain.distill import expected

    out = {}
    for split in dict.fromkeys(r["split"] for r in rows):
        part = [r for r in rows if r["split"] == split]
        said = counts([{"said": str(r["draft_answer"]).lower()} for r in part], "said")
        out[split] = {"questions": len(part), "truth": counts(part, "answer"),
                      "draft_answers": {"yes": said.get("yes", 0), "no": said.get("no", 0), "unclear": said.get("none", 0)},
                      "draft_accuracy": round(sum(r["draft_answer"] == expected(r) for r in part) / len(part), 4),
                      "truncated": sum(r["finish_reason"] == "length" for r in part)}
    return out


def main(argv=None):
    p = base_parser(__doc__)
    p.add_argument("--model", help="the student that drafts (default: base_model_path)")
    p.add_argument("--output", help="drafts JSONL (by hand)")
    args = p.parse_args(argv)
    config = resolve_config(args, {})
    stage = open_stage(args, "drafts", default="data/student_drafts.jsonl")
    if stage.done():
        return
    model = args.model or config.base_model_path
    stage.finish(config, write_drafts(config, model, stage.path), {"student": model})


if __name__ == "__main__":
    run(main)
