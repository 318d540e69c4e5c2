"""distill_data.py: from drafts and teacher replies to what the student is trained on (seed 003).

  --kind validated   every teacher reply parsed (`## Final Assessment ... **YES**/**NO**`; none: unparsable,
                     never guessed) and compared with the truth, and its student target built
                     (distill.reasoning_target, `distill.draft_analysis`: the reasoning first, the part that
                     judges the draft dropped or after the verdict); kept (distill.kept_target, the rule
                     the teacher stage's length check applies too): parsed, not cut off, agreeing,
                     with a target (a reply without a Step-by-Step Reasoning section, or whose target
                     would lose its verdict, is counted as no_reasoning / verdict_lost and not kept). With
                     `balance_by: answer` (the default of method distill) the kept set is brought back to
                     the yes/no ratio of the questions sent (`balance_method` downsample: the
                     over-kept class is cut; upsample: the under-kept one repeated). The marker reports
                     the agreement rate, unparsable count and the classes before filtering, after
                     filtering and after balancing: the seed's 45/55 -> 28/72 skew shows up here.
  --kind track_a     question -> "Yes" / "No", on the kept questions (`distill.track_a_questions: kept`,
                     a fair A/B comparison) or on every drafted training question (`all`: their own ratio)
  --kind track_b     question + student draft -> the target (the teacher's reasoning, then its assessment)
  --kind pairs       Phase C round t (iteration >= 3), prompt = Track B's, of the kinds switched on:
                     on_policy_pairs (default): from the round's judged samples of M_{t-1}, a correct
                     reply chosen against a wrong one (stages/on_policy.py); draft_pairs: chosen = the
                     target, rejected = the student's draft where it is wrong or unclear; flipped_pairs
                     (the seed's "flipped preference"): where no draft pair is made, rejected = the
                     target with its verdict flipped. With `balance_by: answer` the chosen verdicts are
                     brought to 50/50 (downsample), then `distill.max_pairs` caps (class shares kept)
  --kind teacher_data  the trained teacher's examples (`distill.teacher_model: trained`): the dev
                     drafts -> the seed's teacher format filled from each question's facts and truth

Every prompt is rendered by the one prompt builder from the records of selftrain/distill.py, so the
trained prompt and the evaluated prompt are the same text.

  python distill_data.py --kind validated --run_dir results/distill --iteration 1
"""
from __future__ import annotations

from selftrain.cli import base_parser, resolve_config, run
from selftrain.config import Config
from selftrain.distill import (FIRST_ROUND, expected, flip_verdict, gold_teacher_reply, kept_target, teacher_record,
                               teacher_spec, track_a_record, track_b_record)
from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.metrics import counts
from selftrain.models import load_tokenizer
from selftrain.prompts import PromptSpec, render_prompt
from selftrain.records import read_jsonl, seeded_key, write_jsonl_atomic
from selftrain.runs import finished_output, open_stage
from selftrain.stages.on_policy import policy_pairs, question_id

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
    """The kept training questions (draft + agreeing teacher reply + the student's `target` built from it)
    and the validation metrics."""
    by_id = {d["id"]: d for d in drafts}
    setting, rows, targeted = config.distill.draft_analysis, [], []
    why_not = {"unparsable": 0, "disagrees": 0, "no_reasoning": 0, "verdict_lost": 0}
    for reply in replies:
        draft = by_id.get(reply["prompt_id"])
        if draft is None:
            raise InputError(f"teacher reply {reply['id']}: no draft with id {reply['prompt_id']!r} in the drafts")
        row = {"id": draft["id"], "prompt": draft["prompt"], "metadata": draft["metadata"],
               "draft": draft["response"], "draft_answer": draft.get("draft_answer"),
               "teacher_response": reply["response"], "teacher_answer": reply.get("teacher_answer"),
               "teacher_finish_reason": reply["finish_reason"]}
        rows.append(row)
        target, why = kept_target(reply, expected(draft), setting)
        if target is None:
            why_not[why] += 1
        else:
            targeted.append({**row, "target": target})
    unparsable, truncated = why_not["unparsable"], sum(r["teacher_finish_reason"] == "length" for r in rows)
    parsed, agree = len(rows) - unparsable, len(rows) - unparsable - why_not["disagrees"]
    before = counts(rows, "answer")
    no_target = {why: why_not[why] for why in ("no_reasoning", "verdict_lost")}
    if not targeted:
        raise InputError(f"validated: no teacher reply is kept: of {len(rows)} replies {unparsable} have no final "
                         f"assessment ({truncated} cut off at distill.teacher_max_tokens), {why_not['disagrees']} "
                         f"disagree with the truth, {no_target['no_reasoning']} have no Step-by-Step Reasoning "
                         f"section and {no_target['verdict_lost']} lose their verdict as targets "
                         f"(distill.draft_analysis {setting}): nothing to train the student on")
    kept = balanced(config, targeted, before, "validated")
    filtered, after = counts(targeted, "answer"), counts(kept, "answer")
    metrics = {"replies": len(rows), "unparsable": unparsable, "truncated": truncated,
               "teacher_agreement": round(agree / parsed, 4) if parsed else None,
               "teacher_agreement_of_all": round(agree / len(rows), 4),
               "teacher_said": counts([{"s": str(r["teacher_answer"]).lower()} for r in rows], "s"),
               "draft_analysis": setting, **no_target,
               "classes_before": before, "classes_filtered": filtered, "classes_kept": after,
               "ratio_before": ratio(before), "ratio_filtered": ratio(filtered), "ratio_kept": ratio(after),
               "balance_by": config.balance_by, "kept": len(kept),
               "draft_accuracy": round(sum(r["draft_answer"] == expected(r) for r in rows) / len(rows), 4)}
    log(f"validated: teacher agrees on {agree} of {parsed} parsed ({metrics['unparsable']} unparsable), "
        f"{len(targeted)} with a target ({no_target['no_reasoning']} without reasoning, {no_target['verdict_lost']} "
        f"lose the verdict; draft_analysis {setting}); yes/no {metrics['ratio_before']} -> filtered "
        f"{metrics['ratio_filtered']} -> kept {metrics['ratio_kept']}")
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
    rows = [example(r, track_b_record(r, r["draft"]), r["target"], tokenizer, spec) for r in kept]
    return rows, {"examples": len(rows), "classes": counts(rows, "answer")}


def teacher_pairs(config: Config, kept: list[dict], tokenizer, spec) -> list[dict]:
    """The pairs whose chosen text is the teacher's target: rejected = the student's draft where it is wrong
    or unclear (`distill.draft_pairs`; an empty draft is no text to reject), else, with
    `distill.flipped_pairs`, the target with its verdict flipped (the seed's "flipped preference")."""
    d, rows = config.distill, []
    for r in kept:
        if d.draft_pairs and r["draft_answer"] != expected(r) and r["draft"].strip():
            kind, rejected = "draft", r["draft"].strip()
            rejected_kind = "unclear_draft" if r["draft_answer"] is None else "wrong_draft"
        elif d.flipped_pairs:
            kind, rejected, rejected_kind = "flipped", flip_verdict(r["target"]), "flipped"
        else:
            continue
        prompt = example(r, track_b_record(r, r["draft"]), "", tokenizer, spec)
        rows.append({"id": f"{kind}:{r['id']}", "prompt_id": question_id(r), "kind": kind,
                     "prompt": prompt["prompt_text"], "metadata": r["metadata"], "chosen": r["target"],
                     "rejected": rejected, "rejected_kind": rejected_kind, "prompt_spec": spec.to_dict()})
    return rows


def pairs(config: Config, kept: list[dict], judged: list[dict] | None, tokenizer, spec,
          where: str = "judged") -> tuple[list[dict], dict]:
    """Phase C's pairs of one round: the kinds switched on, the chosen verdicts balanced, capped.

    `judged`: the round's judged samples (on_policy_pairs; `where` names their file in errors). A
    chosen reply is right, so its verdict is the question's truth: `classes` in the metrics are the
    chosen verdicts."""
    d = config.distill
    rows, metrics = [], {}
    if d.on_policy_pairs:
        rows, metrics = policy_pairs(config, judged, spec, where)
    rows += teacher_pairs(config, kept, tokenizer, spec)
    kinds = counts([{"k": p["kind"]} for p in rows], "k")
    if not rows:
        said = [f"on-policy: of {metrics['questions']} questions {metrics['questions_all_correct']} had only correct "
                f"samples, {metrics['questions_all_wrong']} only wrong ones, {metrics['questions_mixed']} both "
                f"({metrics['pair_reasons']['no_untruncated_top']} of them with only cut-off correct replies)"
                ] if d.on_policy_pairs else []
        said += ["draft pairs: no kept question has a wrong draft"] if d.draft_pairs else []
        raise InputError("pairs: no preference pair, nothing to train on: " + "; ".join(said) + " (sample more or "
                         "more varied replies: distill.policy_samples, distill.policy_temperature; or switch on "
                         "distill.flipped_pairs)")
    built = len(rows)
    rows = balanced(config, rows, {"yes": 1, "no": 1}, "pairs")
    balanced_n = len(rows)
    rows = capped(rows, d.max_pairs, config.seed)
    metrics.update(pairs=len(rows), pairs_built=built, pairs_balanced=balanced_n, kinds_built=kinds,
                   kinds=counts([{"k": p["kind"]} for p in rows], "k"),
                   rejected_kinds=counts([{"k": p["rejected_kind"]} for p in rows], "k"),
                   classes=counts(rows, "answer"), balance_by=config.balance_by,
                   on_policy_pairs=d.on_policy_pairs, draft_pairs=d.draft_pairs, flipped_pairs=d.flipped_pairs)
    log(f"pairs: {len(rows)} ({built} built, {balanced_n} after balance_by {config.balance_by or 'off'}); kinds "
        f"{metrics['kinds']}; chosen yes/no {ratio(metrics['classes'])}")
    return rows, metrics


def teacher_data(config: Config, drafts: list[dict], tokenizer) -> tuple[list[dict], dict]:
    spec = teacher_spec(config)
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
    if kind == "validated":
        return validate_teacher(config, finished("drafts", 0), finished("teacher", 1))
    kept = finished("validated", 1)
    if any("target" not in r for r in kept):
        raise InputError(f"{finished_output(run_dir, 1, 'validated')}: rows without a target (written before "
                         f"distill.draft_analysis): run the validated stage again")
    if kind == "track_a":
        return track_a(config, kept, finished("drafts", 0), tokenizer, spec)
    if kind == "track_b":
        return track_b(kept, tokenizer, spec)
    if iteration < FIRST_ROUND:
        raise InputError(f"--kind pairs --iteration {iteration}: Phase C's rounds are iterations >= {FIRST_ROUND}")
    if not config.distill.on_policy_pairs:
        return pairs(config, kept, None, tokenizer, spec)
    from selftrain.stages.reward_pairs import read_judged

    judged = finished_output(run_dir, iteration, "judged")
    return pairs(config, kept, read_judged(judged), tokenizer, spec, str(judged))


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
