"""distill_data.py: from drafts and teacher replies to what the student is trained on (seed 003).

  --kind validated   every teacher reply parsed (`## Final Assessment ... **YES**/**NO**`; none: unparsable,
                     never guessed) and compared with the truth; kept: parsed, not cut off, agreeing. With
                     `balance_by: answer` (the default of method distill) the kept set is brought back to
                     the yes/no ratio of the questions sent (`balance_method` downsample: the
                     over-kept class is cut; upsample: the under-kept one repeated). The marker reports
                     the agreement rate, unparsable count and the classes before filtering, after
                     filtering and after balancing: the seed's 45/55 -> 28/72 skew shows up here.
  --kind track_a     question -> "Yes" / "No", on the kept questions (`distill.track_a_questions: kept`,
                     a fair A/B comparison) or on every drafted training question (`all`: their own ratio)
  --kind track_b     question + student draft -> the teacher's reply (reasoning, then its assessment)
  --kind pairs       Phase C: prompt = Track B's, chosen = the teacher's reply, rejected = the student's
                     draft where it is wrong (or gives no clear answer), else (`distill.flipped_pairs`, the
                     seed's "flipped preference") the teacher's reply with its verdict flipped
  --kind teacher_data  the trained teacher's examples (`distill.teacher_model: trained`): the dev
                     drafts -> the seed's teacher format filled from each question's facts and truth

Every prompt is rendered by the one prompt builder from the records of selftrain/distill.py, so the
trained prompt and the evaluated prompt are the same text.

  python distill_data.py --kind validated --run_dir results/distill --iteration 1
"""
from __future__ import annotations

from selftrain.cli import base_parser, resolve_config, run
from selftrain.config import Config
from selftrain.distill import (expected, flip_verdict, gold_teacher_reply, teacher_record, track_a_record,
                               track_b_record)
from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.metrics import counts
from selftrain.models import load_tokenizer
from selftrain.prompts import PromptSpec, render_prompt
from selftrain.records import read_jsonl, seeded_key, write_jsonl_atomic
from selftrain.runs import finished_output, open_stage

KINDS = ("validated", "track_a", "track_b", "pairs", "teacher_data")


def ratio(classes: dict) -> str:
    total = sum(classes.values()) or 1
    return "/".join(f"{100 * classes.get(a, 0) / total:.0f}" for a in ("yes", "no"))


def balanced(config: Config, rows: list[dict], reference: dict, what: str) -> list[dict]:
    """`rows` in the yes/no ratio of `reference` (class counts) when balance_by is answer, else as they are."""
    if config.balance_by != "answer":
        return rows
    return to_ratio(rows, reference, config.balance_method, config.seed, what)


def to_ratio(rows: list[dict], reference: dict, method: str, seed: int, what: str = "rows") -> list[dict]:
    """`rows` cut (downsample) or repeated (upsample) so their answer classes have the ratio of `reference`.

    Which rows go is a seeded choice; repeated rows get `~up<k>` ids like select.balance's. A class with
    no row left cannot be restored: an InputError names `what`."""
    classes = {c: [r for r in rows if group(r) == c] for c in reference if reference[c] > 0}
    missing = [c for c, members in classes.items() if not members]
    if missing:  # nothing brings a class back, and training on the rest is the seed's skew
        raise InputError(f"{what}: balance_by answer: no example of class {', '.join(missing)} is left, so the "
                         f"yes/no ratio {ratio(reference)} cannot be kept (balance_by: '' trains on the skewed set)")
    pick = min if method == "downsample" else max
    scale = pick(len(members) / reference[c] for c, members in classes.items())
    out = []
    for c, members in classes.items():
        target = max(1, round(scale * reference[c]))
        order = sorted(members, key=lambda r: seeded_key(r, seed))
        out += order[:target]
        out += [dict(order[i % len(order)], id=f"{order[i % len(order)]['id']}~up{i // len(order) + 1}")
                for i in range(target - len(order))]
    position = {r["id"]: i for i, r in enumerate(rows)}
    return sorted(out, key=lambda r: (position.get(r["id"].split("~up")[0], 0), r["id"]))


def capped(rows: list[dict], n: int, seed: int) -> list[dict]:
    """At most `n` of `rows` (0: all), a seeded sample with each answer class's share kept (largest
    remainders), in the rows' order."""
    if not n or len(rows) <= n:
        return rows
    classes = {}
    for r in rows:
        classes.setdefault(group(r), []).append(r)
    quota = {c: n * len(m) // len(rows) for c, m in classes.items()}
    by_remainder = sorted(classes, key=lambda c: (-(n * len(classes[c]) % len(rows)), c))
    for c in by_remainder[:n - sum(quota.values())]:
        quota[c] += 1
    chosen = {r["id"] for c, m in classes.items() for r in sorted(m, key=lambda r: seeded_key(r, seed))[:quota[c]]}
    return [r for r in rows if r["id"] in chosen]


def group(record: dict) -> str:
    from selftrain.metrics import group_value

    return group_value(record, "answer")


def validate_teacher(config: Config, drafts: list[dict], replies: list[dict]) -> tuple[list[dict], dict]:
    """The kept training questions (draft + agreeing teacher reply) and the validation metrics."""
    by_id = {d["id"]: d for d in drafts}
    rows = []
    for reply in replies:
        draft = by_id.get(reply["prompt_id"])
        if draft is None:
            raise InputError(f"teacher reply {reply['id']}: no draft with id {reply['prompt_id']!r} in the drafts")
        rows.append({"id": draft["id"], "prompt": draft["prompt"], "metadata": draft["metadata"],
                     "draft": draft["response"], "draft_answer": draft.get("draft_answer"),
                     "teacher_response": reply["response"], "teacher_answer": reply.get("teacher_answer"),
                     "teacher_finish_reason": reply["finish_reason"]})
    parsed = [r for r in rows if r["teacher_answer"] is not None]
    agree = [r for r in parsed if r["teacher_answer"] == expected(r)]
    unparsable, truncated = len(rows) - len(parsed), sum(r["teacher_finish_reason"] == "length" for r in rows)
    before = counts(rows, "answer")
    if not agree:
        raise InputError(f"validated: no teacher reply is kept: of {len(rows)} replies {unparsable} have no final "
                         f"assessment ({truncated} cut off at distill.teacher_max_tokens) and {len(parsed)} disagree "
                         f"with the truth: nothing to train the student on")
    kept = balanced(config, agree, before, "validated")
    filtered, after = counts(agree, "answer"), counts(kept, "answer")
    metrics = {"replies": len(rows), "unparsable": unparsable, "truncated": truncated,
               "teacher_agreement": round(len(agree) / len(parsed), 4) if parsed else None,
               "teacher_agreement_of_all": round(len(agree) / len(rows), 4),
               "teacher_said": counts([{"s": str(r["teacher_answer"]).lower()} for r in rows], "s"),
               "classes_before": before, "classes_filtered": filtered, "classes_kept": after,
               "ratio_before": ratio(before), "ratio_filtered": ratio(filtered), "ratio_kept": ratio(after),
               "balance_by": config.balance_by, "kept": len(kept),
               "draft_accuracy": round(sum(r["draft_answer"] == expected(r) for r in rows) / len(rows), 4)}
    log(f"validated: teacher agrees on {len(agree)} of {len(parsed)} parsed ({metrics['unparsable']} unparsable); "
        f"yes/no {metrics['ratio_before']} -> filtered {metrics['ratio_filtered']} -> kept {metrics['ratio_kept']}")
    return kept, metrics


def example(record: dict, prompt_record: dict, response: str, tokenizer, spec: PromptSpec) -> dict:
    return {"id": record["id"], "prompt_id": record["id"], "prompt": prompt_record["prompt"],
            "metadata": record["metadata"], "prompt_text": render_prompt(tokenizer, prompt_record, spec),
            "response": response, "prompt_spec": spec.to_dict()}


def track_a(config: Config, kept: list[dict], drafts: list[dict], tokenizer, spec) -> tuple[list[dict], dict]:
    source = kept if config.distill.track_a_questions == "kept" else \
        [d for d in drafts if d.get("split", "train") == "train"]  # every question sent: its own ratio
    rows = [example(r, track_a_record(r), expected(r).capitalize(), tokenizer, spec) for r in source]
    return rows, {"examples": len(rows), "classes": counts(rows, "answer")}


def track_b(kept: list[dict], tokenizer, spec) -> tuple[list[dict], dict]:
    rows = [example(r, track_b_record(r, r["draft"]), r["teacher_response"].strip(), tokenizer, spec) for r in kept]
    return rows, {"examples": len(rows), "classes": counts(rows, "answer")}


def pairs(config: Config, kept: list[dict], tokenizer, spec) -> tuple[list[dict], dict]:
    """Phase C: chosen = the teacher's reply; rejected = the student's draft where it is wrong (or unclear),
    else, with `distill.flipped_pairs`, the teacher's reply with its verdict flipped."""
    def draft_wrong(r: dict) -> bool:
        return r["draft_answer"] != expected(r)

    wrong = [r for r in kept if draft_wrong(r)]
    source = kept if config.distill.flipped_pairs else balanced(config, wrong, counts(kept, "answer"), "pairs")
    rows = []
    for r in source:
        from_draft = draft_wrong(r)
        prompt = example(r, track_b_record(r, r["draft"]), "", tokenizer, spec)
        chosen = r["teacher_response"].strip()
        rows.append({"id": r["id"], "prompt_id": r["id"], "prompt": prompt["prompt_text"], "metadata": r["metadata"],
                     "chosen": chosen, "rejected": r["draft"].strip() if from_draft else flip_verdict(chosen),
                     "rejected_kind": ("unclear_draft" if r["draft_answer"] is None else "wrong_draft")
                     if from_draft else "flipped", "prompt_spec": spec.to_dict()})
    if not rows:
        raise InputError("pairs: no kept question has a wrong draft: there is no preference to learn "
                         "(distill.flipped_pairs: true pairs every kept question)")
    built = len(rows)
    rows = capped(rows, config.distill.max_pairs, config.seed)
    return rows, {"pairs": len(rows), "pairs_built": built, "wrong_drafts": len(wrong),
                  "flipped_pairs": config.distill.flipped_pairs,
                  "rejected_kinds": counts([{"k": p["rejected_kind"]} for p in rows], "k"),
                  "classes_wrong": counts(wrong, "answer"), "classes": counts(rows, "answer")}


def teacher_data(config: Config, drafts: list[dict], tokenizer) -> tuple[list[dict], dict]:
    spec = PromptSpec(config.distill.teacher_system_prompt, 0, "", True)
    dev = [d for d in drafts if d.get("split") == "dev"]
    if not dev:
        raise InputError("teacher_data: the drafts hold no dev-split draft (distill.teacher_model must be 'trained')")
    try:
        rows = [example(d, teacher_record(d, d["response"], config.distill.teacher_sees_facts),
                        gold_teacher_reply(d, d["response"]), tokenizer, spec) for d in dev]
    except ValueError as exc:
        raise InputError(f"teacher_data: {exc}") from None
    return rows, {"examples": len(rows), "classes": counts(rows, "answer")}


def build(config: Config, kind: str, run_dir, iteration: int, args) -> tuple[list[dict], dict]:
    def finished(stage: str, n: int):
        return read_jsonl(finished_output(run_dir, n, stage))

    spec = PromptSpec.from_config(config)
    tokenizer = load_tokenizer(config.base_model_path)
    if kind == "teacher_data":
        from pathlib import Path

        drafts = Path(args.drafts)  # a drafts file, or the main run whose iteration-0 drafts they are
        return teacher_data(config, read_jsonl(finished_output(drafts, 0, "drafts") if drafts.is_dir() else drafts),
                            tokenizer)
    drafts = finished("drafts", 0)
    if kind == "validated":
        return validate_teacher(config, drafts, finished("teacher", 1))
    kept = finished("validated", 1)
    if kind == "track_a":
        return track_a(config, kept, drafts, tokenizer, spec)
    if kind == "track_b":
        return track_b(kept, tokenizer, spec)
    return pairs(config, kept, tokenizer, spec)


def main(argv=None):
    p = base_parser(__doc__)
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--drafts", help="teacher_data: the drafts JSONL, or the run folder whose iteration-0 drafts to use")
    args = p.parse_args(argv)
    config = resolve_config(args, {})
    if not args.run_dir:
        raise InputError(f"distill_data.py --kind {args.kind}: give --run_dir (the stages read the run's drafts and replies)")
    if args.kind == "teacher_data" and not args.drafts:
        raise InputError("distill_data.py --kind teacher_data: give --drafts")
    stage = open_stage(args, args.kind)
    if stage.done():
        return
    rows, metrics = build(config, args.kind, args.run_dir, args.iteration, args)
    write_jsonl_atomic(stage.path, rows)
    stage.finish(config, metrics)


if __name__ == "__main__":
    run(main)
