"""Distillation (seed 003) without a model: the teacher's verdict parser, the targets (reasoning first), the
prompts (trained = evaluated), class balance after filtering, the teacher-made pairs, the report's variant
table, the seed's `.env` names, the key check and the dry run. Phase C's on-policy round:
tests/test_distill_on_policy.py."""
from __future__ import annotations

import re

import pytest

from selftrain.config import load_config
from selftrain.distill import gold_teacher_reply, reasoning_target, sections, shuffled, teacher_answer, track_b_record
from selftrain.errors import InputError
from selftrain.prompts import PromptSpec, render_prompt
from selftrain.rewards.yesno import extract_yes_no
from selftrain.stages.distill_data import example, pairs, to_ratio, track_a, track_b, validate_teacher
from selftrain.stages.distill_eval import variant_records
from selftrain.stages.teacher import check_key, dry_run

YESNO = {"method": "distill", "task": {"name": "yesno"}, "reward_config": {"type": "rule_based", "rule_type": "yesno"}}

TEACHER = ("## Teaching Analysis\nThe student multiplied first, which is the right start.\n\n"
           "## Step-by-Step Reasoning\n1. 17 * 4 = 68.\n2. 68 is more than 60.\n\n"
           "## Final Assessment\nBased on this analysis, the answer is: **YES**")
REASONING_FIRST = ("## Step-by-Step Reasoning\n1. 17 * 4 = 68.\n2. 68 is more than 60.\n\n"
                   "## Final Assessment\nBased on this analysis, the answer is: **YES**")


def question(i: int, answer: str, **meta) -> dict:
    return {"id": f"q{i}", "prompt": f"Is {i} * 4 more than 60?",
            "metadata": {"expected_answer": answer, "facts": [f"{i} * 4 = {i * 4}"],
                         "decomposition": [f"What is {i} * 4?", f"Is {i * 4} more than 60?"], **meta}}


# --- the teacher's verdict ------------------------------------------------------------------------

@pytest.mark.parametrize("text, verdict", [
    (TEACHER, "yes"),
    (TEACHER.replace("**YES**", "**NO**"), "no"),
    (TEACHER.replace("**YES**", "** yes **"), "yes"),
    (TEACHER.replace("**YES**", "**[NO]**"), "no"),  # the seed's own **[YES/NO]** filled in
    (TEACHER.replace("**YES**", "**Yes.**"), "yes"),
    # a bold word quoted before the assessment does not count once the assessment has its own
    ("The student wrote **NO**.\n## Final Assessment\nthe answer is: **YES**", "yes"),
    ("## Teaching Analysis\nThe answer is clearly yes.", None),  # prose is never guessed
    ("## Final Assessment\nthe answer is: YES", None),  # not the bold verdict
    ("## Final Assessment\n**YES** or **NO**", None),  # both: no verdict
    ("", None),
])
def test_teacher_answer_takes_only_the_bold_final_verdict(text, verdict):
    assert teacher_answer(text) == verdict


def test_gold_teacher_reply_is_the_seed_format_and_parses_to_the_truth():
    for answer, draft in (("yes", "Answer: No - 17 * 4 is small\nQuestions: what is 17 * 4?"),
                          ("no", "Answer: No - it is small\nQuestions: ?")):
        reply = gold_teacher_reply(question(17, answer), draft)
        assert reply.startswith("## Teaching Analysis\n") and "## Step-by-Step Reasoning\n1. What is 17 * 4? 17 * 4 = 68" in reply
        assert teacher_answer(reply) == answer
    assert "but the facts say otherwise" in gold_teacher_reply(question(17, "yes"), "Answer: No - x")
    assert "which is right" in gold_teacher_reply(question(17, "no"), "Answer: No - x")


# --- one prompt for training and evaluation ---------------------------------------------------------

def test_track_b_training_and_evaluation_prompts_are_the_same_text(smol_tokenizer_dir):
    from selftrain.models import load_tokenizer

    tokenizer = load_tokenizer(smol_tokenizer_dir)
    spec = PromptSpec("You are careful.", 0, "", True)
    draft = "Answer: Yes - 68 > 60\nQuestions: is 17 * 4 = 68?"
    kept = [{**question(17, "yes"), "draft": draft, "draft_answer": "yes", "teacher_response": TEACHER,
             "target": REASONING_FIRST}]
    (trained,), _ = track_b(kept, tokenizer, spec)
    tests = [{**question(17, "yes"), "response": draft}, {**question(3, "no"), "response": "Answer: No - 12"}]
    evaluated = render_prompt(tokenizer, variant_records("b", tests, 0)[0], spec)
    assert trained["prompt_text"] == evaluated  # identical up to the answer
    assert draft in evaluated and "Question: Is 17 * 4 more than 60?" in evaluated
    assert trained["response"] == REASONING_FIRST
    no_draft = render_prompt(tokenizer, variant_records("no_draft", tests, 0)[0], spec)
    assert draft not in no_draft and no_draft.replace("\n\n", "") != evaluated.replace("\n\n", "")
    swapped = variant_records("shuffled", tests, 0)
    assert "Answer: No - 12" in swapped[0]["prompt"] and draft in swapped[1]["prompt"]
    config = load_config(None, {"method": "distill", "task": {"name": "yesno"},
                                "reward_config": {"type": "rule_based", "rule_type": "yesno"}})
    (trained_a,), _ = track_a(config, kept, [], tokenizer, spec)
    assert trained_a["prompt_text"] == render_prompt(tokenizer, variant_records("a", tests, 0)[0], spec)
    assert trained_a["response"] == "Yes"


def test_shuffled_drafts_never_keep_their_own_and_are_seeded():
    ids = [f"q{i}" for i in range(9)]
    mapping = shuffled(ids, 0)
    assert sorted(mapping) == ids and sorted(mapping.values()) == ids
    assert all(a != b for a, b in mapping.items())
    assert mapping == shuffled(ids, 0) and mapping != shuffled(ids, 1)
    with pytest.raises(ValueError):
        shuffled(["q0"], 0)


# --- filtering and class balance -----------------------------------------------------------------

def skewed_agreement(n_each: int = 50) -> tuple[list[dict], list[dict]]:
    """50 yes and 50 no questions; the teacher is right on 90% of the no's and 40% of the yes's."""
    drafts, replies = [], []
    for i in range(2 * n_each):
        truth = "yes" if i < n_each else "no"
        right = (i % 10 < 4) if truth == "yes" else (i % 10 < 9)
        said = truth if right else ("no" if truth == "yes" else "yes")
        drafts.append({**question(i, truth), "response": "Answer: No - draft", "draft_answer": "no", "split": "train"})
        replies.append({"id": f"q{i}", "prompt_id": f"q{i}", "response": TEACHER.replace("YES", said.upper()),
                        "teacher_answer": said, "finish_reason": "stop"})
    return drafts, replies


def test_filtering_without_balance_skews_the_classes_and_balance_by_answer_keeps_the_ratio():
    drafts, replies = skewed_agreement()
    off = load_config(None, {"method": "distill", "task": {"name": "yesno"}, "balance_by": "",
                             "reward_config": {"type": "rule_based", "rule_type": "yesno"}})
    kept, m = validate_teacher(off, drafts, replies)
    assert m["classes_before"] == {"no": 50, "yes": 50}
    assert m["classes_kept"] == m["classes_filtered"] == {"no": 45, "yes": 20}  # 31/69: the seed's skew
    assert m["teacher_agreement"] == 0.65 and m["unparsable"] == 0
    on = load_config(None, {"method": "distill", "task": {"name": "yesno"},
                            "reward_config": {"type": "rule_based", "rule_type": "yesno"}})
    assert on.balance_by == "answer"  # the method's default
    kept, m = validate_teacher(on, drafts, replies)
    assert m["classes_filtered"] == {"no": 45, "yes": 20}
    assert m["classes_kept"] == {"no": 20, "yes": 20} and m["ratio_kept"] == "50/50"
    assert all(r["teacher_answer"] == r["metadata"]["expected_answer"] for r in kept)


def test_to_ratio_restores_the_reference_ratio_down_and_up():
    rows = [question(i, "yes") for i in range(30)] + [question(100 + i, "no") for i in range(60)]
    down = to_ratio(rows, {"yes": 45, "no": 55}, "downsample", 0)
    counts = {c: sum(r["metadata"]["expected_answer"] == c for r in down) for c in ("yes", "no")}
    assert counts == {"yes": 30, "no": 37}  # 30 / 45 * 55 = 36.7
    up = to_ratio(rows, {"yes": 50, "no": 50}, "upsample", 0)
    assert sum(r["metadata"]["expected_answer"] == "yes" for r in up) == 60
    assert len({r["id"] for r in up}) == len(up)  # repeated rows get their own ids
    assert to_ratio(rows, {"yes": 50, "no": 50}, "downsample", 0) == to_ratio(rows, {"yes": 50, "no": 50}, "downsample", 0)


def test_unparsable_and_cut_off_teacher_replies_are_counted_never_kept():
    drafts, replies = skewed_agreement(5)
    replies[0] = {**replies[0], "response": "The answer is yes.", "teacher_answer": None}
    replies[1] = {**replies[1], "finish_reason": "length", "teacher_answer": None}
    config = load_config(None, {"method": "distill", "task": {"name": "yesno"}, "balance_by": "",
                                "reward_config": {"type": "rule_based", "rule_type": "yesno"}})
    kept, m = validate_teacher(config, drafts, replies)
    assert m["unparsable"] == 2 and m["truncated"] == 1
    assert {"q0", "q1"}.isdisjoint(r["id"] for r in kept)
    none = [{**r, "response": "The answer is yes.", "teacher_answer": None} for r in replies]
    with pytest.raises(InputError, match=r"no teacher reply is kept: of 10 replies 10 have no final assessment"):
        validate_teacher(config, drafts, none)


def kept_rows(*rows) -> list[dict]:
    return [{**question(i, truth), "draft": draft, "draft_answer": extract_yes_no(draft) if draft else None,
             "teacher_response": TEACHER.replace("YES", truth.upper()),
             "target": REASONING_FIRST.replace("YES", truth.upper())} for i, truth, draft in rows]


def test_the_seeds_pairs_are_options_off_by_default_and_reject_wrong_drafts_or_the_flipped_target(smol_tokenizer_dir):
    from selftrain.models import load_tokenizer

    tokenizer = load_tokenizer(smol_tokenizer_dir)
    spec = PromptSpec("You are careful.", 0, "", True)
    kept = kept_rows((1, "yes", "Answer: No - small"), (2, "yes", "Answer: Yes - big"), (3, "yes", "I am not sure"),
                     (4, "yes", ""))
    off = {**YESNO, "balance_by": ""}
    assert not load_config(None, off).distill.draft_pairs and not load_config(None, off).distill.flipped_pairs
    both = load_config(None, {**off, "distill": {"on_policy_pairs": False, "draft_pairs": True, "flipped_pairs": True}})
    rows, m = pairs(both, kept, None, tokenizer, spec)
    assert [r["id"] for r in rows] == ["draft:q1", "flipped:q2", "draft:q3", "flipped:q4"]  # an empty draft: flipped
    assert [r["rejected_kind"] for r in rows] == ["wrong_draft", "flipped", "unclear_draft", "flipped"]
    assert rows[0]["chosen"] == kept[0]["target"] and rows[0]["rejected"] == "Answer: No - small"
    assert rows[1]["rejected"] == kept[1]["target"].replace("**YES**", "**NO**")  # differs only in the verdict
    assert teacher_answer(rows[1]["rejected"]) == "no" and rows[1]["chosen"].startswith("## Step-by-Step Reasoning")
    assert rows[0]["prompt"] == example(kept[0], track_b_record(kept[0], kept[0]["draft"]), "", tokenizer,
                                        spec)["prompt_text"]
    assert m["kinds"] == {"draft": 2, "flipped": 2} and m["classes"] == {"yes": 4}
    drafts_only = load_config(None, {**off, "distill": {"on_policy_pairs": False, "draft_pairs": True}})
    rows, m = pairs(drafts_only, kept, None, tokenizer, spec)
    assert [r["id"] for r in rows] == ["draft:q1", "draft:q3"] and m["rejected_kinds"] == {"unclear_draft": 1,
                                                                                          "wrong_draft": 1}
    with pytest.raises(InputError, match="pairs: no preference pair.*draft pairs: no kept question has a wrong draft"):
        pairs(drafts_only, kept[1:2], None, tokenizer, spec)


def test_teacher_made_pairs_are_balanced_50_50_and_capped_keeping_the_shares(smol_tokenizer_dir):
    from selftrain.models import load_tokenizer

    tokenizer = load_tokenizer(smol_tokenizer_dir)
    spec = PromptSpec("", 0, "", True)
    kept = kept_rows(*[(i, truth, "Answer: No") for i, truth in enumerate(["yes", "no", "yes"] * 4)])  # 8 yes, 4 no
    flipped = {**YESNO, "distill": {"on_policy_pairs": False, "flipped_pairs": True}}
    rows, m = pairs(load_config(None, flipped), kept, None, tokenizer, spec)
    assert m["pairs_built"] == 12 and m["classes"] == {"no": 4, "yes": 4} and m["pairs"] == 8  # the larger class cut
    capped, m = pairs(load_config(None, {**flipped, "distill": {**flipped["distill"], "max_pairs": 4}}), kept, None,
                      tokenizer, spec)
    assert m["pairs"] == 4 and m["pairs_balanced"] == 8 and m["classes"] == {"no": 2, "yes": 2}
    assert [r["id"] for r in capped] == [r["id"] for r in rows if r["id"] in {c["id"] for c in capped}]  # in order
    drafts = {**YESNO, "distill": {"on_policy_pairs": False, "draft_pairs": True}}  # the drafts say No: yes-only pairs
    with pytest.raises(InputError, match=r"pairs: balance_by answer: no example of class no is left"):
        pairs(load_config(None, drafts), kept, None, tokenizer, spec)


# --- the targets: the teacher's reasoning first ----------------------------------------------------

API_REPLY = ("Sure! Here is my review.\n\n**Teaching Analysis:** The draft says no, but that is wrong.\n\n"
             "### Step by step reasoning\n1. 17 * 4 = 68.\n2. 68 > 60.\n\n"
             "**Final Assessment**\nBased on this analysis, the answer is: **YES**")


def test_sections_read_the_seeds_headings_however_they_are_marked():
    names = [name for name, _ in sections(API_REPLY)]
    assert names == ["preamble", "analysis", "reasoning", "assessment"]
    assert [name for name, _ in sections(TEACHER)] == ["analysis", "reasoning", "assessment"]
    assert sections("no headings at all") == [("preamble", "no headings at all")]
    assert teacher_answer(API_REPLY) == "yes"  # the verdict after the bold Final Assessment heading


@pytest.mark.parametrize("reply", [TEACHER, API_REPLY, gold_teacher_reply(question(17, "yes"), "Answer: No - small")],
                         ids=["seed_format", "api_style", "trained_teacher"])
def test_targets_open_with_the_reasoning_and_keep_the_verdict(reply):
    drop, why = reasoning_target(reply, "drop")
    assert why == "ok" and sections(drop)[0][0] == "reasoning" and "analysis" not in dict(sections(drop))
    assert "draft" not in drop.lower() and extract_yes_no(drop) == "yes"
    after, why = reasoning_target(reply, "after")
    assert why == "ok" and [n for n, _ in sections(after)] == ["reasoning", "assessment", "analysis"]
    assert extract_yes_no(after) == "yes" and after.startswith(drop)  # the analysis follows the verdict
    first, why = reasoning_target(reply, "first")
    assert (first, why) == (reply.strip(), "ok")  # the seed's order, kept for the measurement


def test_a_reply_without_reasoning_or_whose_verdict_sits_in_the_analysis_gives_no_target():
    no_steps = "## Teaching Analysis\nThe draft is right.\n\n## Final Assessment\nthe answer is: **YES**"
    assert reasoning_target(no_steps, "drop") == (None, "no_reasoning")
    assert reasoning_target(no_steps, "first") == (None, "no_reasoning")  # every setting keeps the same questions
    verdict_first = "## Teaching Analysis\nThe answer is **YES**.\n\n## Step-by-Step Reasoning\n1. 17 * 4 = 68."
    assert reasoning_target(verdict_first, "drop") == (None, "verdict_lost")
    assert reasoning_target(verdict_first, "first") == (verdict_first, "ok")
    with pytest.raises(ValueError, match="draft_analysis"):
        reasoning_target(TEACHER, "before")


def test_the_teacher_stage_measures_exactly_the_targets_the_validated_stage_keeps(smol_tokenizer_dir, tmp_path):
    """One rule (kept_target) for both: the replies not kept carry the longest would-be targets, so the
    teacher stage's longest target is the validated stage's only if it skips the same replies."""
    from selftrain.checks import student_tokens
    from selftrain.distill import kept_target
    from selftrain.models import load_tokenizer
    from selftrain.stages.teacher import longest_target

    many = "".join(f"{k}. Step {k} of a long check.\n" for k in range(1, 30))
    long_reply = TEACHER.replace("2. 68 is more than 60.\n", many)
    drafts = [{**question(i, "yes"), "response": "Answer: Yes - big", "draft_answer": "yes", "split": "train"}
              for i in range(5)]
    replies = [{"id": f"q{i}", "prompt_id": f"q{i}", "finish_reason": finish, "teacher_answer": said, "response": text}
               for i, (text, said, finish) in enumerate([
                   (TEACHER, "yes", "stop"),  # kept
                   (long_reply, None, "length"),  # cut off: no verdict read
                   (long_reply.replace("**YES**", "**NO**"), "no", "stop"),  # disagrees with the truth
                   ("## Teaching Analysis\n" + many + "\n## Final Assessment\nthe answer is: **YES**", "yes", "stop"),
                   (TEACHER.replace("1. 17 * 4 = 68.", "1. 17 * 4 = 68, more than 60."), "yes", "stop")])]  # kept
    config = load_config(None, {**YESNO, "balance_by": "", "base_model_path": smol_tokenizer_dir,
                                "max_new_tokens": 1000})
    assert [kept_target(r, "yes", "drop")[1] for r in replies] == ["ok", "unparsable", "disagrees", "no_reasoning", "ok"]
    kept, m = validate_teacher(config, drafts, replies)
    assert [r["id"] for r in kept] == ["q0", "q4"] and m["unparsable"] == 1 and m["no_reasoning"] == 1
    assert m["teacher_agreement"] == 0.75  # 3 of the 4 parsed agree
    tokenizer = load_tokenizer(smol_tokenizer_dir)
    kept_counts = [student_tokens(config, tokenizer, r["target"]) for r in kept]
    dropped = reasoning_target(long_reply, "drop")[0]
    assert student_tokens(config, tokenizer, dropped) > max(kept_counts)
    assert longest_target(config, drafts, replies, tmp_path / "teacher_outputs.jsonl") == max(kept_counts)


@pytest.mark.parametrize("setting", ["drop", "after", "first"])
def test_track_b_targets_start_with_the_reasoning_not_a_verdict_for_each_setting(setting, smol_tokenizer_dir):
    from selftrain.models import load_tokenizer

    drafts, replies = [], []
    for i, truth in enumerate(["yes", "no"] * 3):
        draft = "Answer: No - it is small" if i % 3 else "Answer: Yes - big"
        drafts.append({**question(10 + i, truth), "response": draft, "draft_answer": extract_yes_no(draft),
                       "split": "train"})
        replies.append({"id": f"q{10 + i}", "prompt_id": f"q{10 + i}", "finish_reason": "stop", "teacher_answer": truth,
                        "response": gold_teacher_reply(drafts[-1], draft)})
    replies.append({"id": "q16", "prompt_id": "q16", "finish_reason": "stop", "teacher_answer": "yes",
                    "response": "## Teaching Analysis\nRight.\n\n## Final Assessment\nthe answer is: **YES**"})
    drafts.append({**question(16, "yes"), "response": "Answer: Yes", "draft_answer": "yes", "split": "train"})
    config = load_config(None, {**YESNO, "balance_by": "", "distill": {"draft_analysis": setting}})
    kept, m = validate_teacher(config, drafts, replies)
    assert m["no_reasoning"] == 1 and m["verdict_lost"] == 0 and m["draft_analysis"] == setting
    assert m["kept"] == 6 and "q16" not in {r["id"] for r in kept}  # counted, not trained on
    rows, _ = track_b(kept, load_tokenizer(smol_tokenizer_dir), PromptSpec("", 0, "", True))
    for row in rows:
        opening = row["response"].split("\n")[:2]  # the heading and the first step
        if setting == "first":  # the seed's order: the verdict on the draft opens the target
            assert opening[0] == "## Teaching Analysis" and re.search(r"which is right|say otherwise", opening[1])
            continue
        assert opening[0] == "## Step-by-Step Reasoning" and opening[1].startswith("1. What is ")
        assert not re.search(r"\b(yes|no|right|wrong|otherwise|draft)\b", " ".join(opening), re.I)
        assert extract_yes_no(row["response"]) == row["metadata"]["expected_answer"]
        assert ("## Teaching Analysis" in row["response"]) == (setting == "after")


# --- the report: every model on every prompt variant ----------------------------------------------

def test_the_report_shows_every_model_on_every_variant_in_one_table():
    from selftrain.report import _table
    from selftrain.report_distill import distill_metrics, distill_tables

    def ev(variant, accuracy, yes):
        return {"variant": variant, "accuracy": accuracy, "predicted_yes": yes, "predicted_no": 1 - yes, "unclear": 0,
                "accuracy_yes": accuracy, "accuracy_no": accuracy}

    rows = []
    for n, main in ((0, "a"), (1, "a"), (2, "b"), (3, "b"), (4, "b")):
        others = [v for v in ("a", "b", "no_draft", "shuffled") if v != main]
        m = {"eval": ev(main, 0.5 + n / 20, 0.5)} | {f"eval_{v}": ev(v, 0.4 + i / 100, 0.3) for i, v in enumerate(others)}
        if n >= 3:
            m["pairs"] = {"samples": 80, "sample_accuracy": 0.55, "questions_all_correct": 3, "questions_all_wrong": 2,
                          "questions_mixed": 5, "pairs_built": 5, "pairs": 4, "kinds": {"on_policy": 4},
                          "classes": {"yes": 2, "no": 2}, "rejected_kinds": {"wrong_sample": 4}}
        rows.append({"iter": n, "distill": distill_metrics(m)})
    text = "\n".join(distill_tables(rows, _table))
    assert "| iter | model | a: question | b: question + draft | no draft (b's prompt without it) | shuffled" in text
    assert "| 0 | base (M0) | 50.0% / 50.0% * | 40.0% / 30.0% | 41.0% / 30.0% | 42.0% / 30.0% |" in text
    assert "| 2 | Track B | 40.0% / 30.0% | 60.0% / 50.0% * | 41.0% / 30.0% | 42.0% / 30.0% |" in text
    assert "| 4 | Phase C round 2 (DPO) |" in text
    assert "| 3 | 80 | 55.0% | 3 / 2 / 5 | 5 -> 4 (4 on_policy) | 50/50 (n=4) |" in text
    assert "Phase C (DPO, Phase C round 2 (DPO)) | +10pp over Phase A | 70.0% (+15.0pp) | met" in text


# --- the seed's .env names, the key, the dry run -----------------------------------------------------

def test_seed_env_names_override_the_config_for_method_distill(monkeypatch, tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("method: distill\ntask: {name: yesno}\nreward_config: {type: rule_based, rule_type: yesno}\n"
                    "distill: {train_samples: 50, teacher_model: gpt-x}\n")
    for name, value in {"TRAIN_SAMPLES": "200", "RANDOM_SEED": "42", "GPT4_MODEL": "gpt-4.1-nano-2025-04-14",
                        "GPT4_MAX_TOKENS": "150", "GPT4_TEMPERATURE": "0.3", "DRY_RUN": "True", "USE_4BIT": "False",
                        "MAX_NEW_TOKENS": "35"}.items():
        monkeypatch.setenv(name, value)
    c = load_config(path)
    d = c.distill
    assert (d.train_samples, c.seed, d.teacher_model, d.teacher_max_tokens, d.teacher_temperature, d.dry_run,
            d.draft_max_new_tokens, c.training_method) == (200, 42, "gpt-4.1-nano-2025-04-14", 150, 0.3, True, 35, "lora")
    assert load_config(path, {"distill.train_samples": 7}).distill.train_samples == 7  # --set wins
    monkeypatch.setenv("TRAIN_SAMPLES", "many")
    with pytest.raises(InputError, match="train_samples"):
        load_config(path)
    other = tmp_path / "s.yaml"
    other.write_text("method: star\n")
    monkeypatch.setenv("TRAIN_SAMPLES", "200")
    assert load_config(other).distill.train_samples == 200  # the default: other methods ignore the names
    monkeypatch.setenv("RANDOM_SEED", "42")
    assert load_config(other).seed == 0


def remote_teacher(url: str, **distill) -> object:
    return load_config(None, {"method": "distill", "task": {"name": "yesno"},
                              "reward_config": {"type": "rule_based", "rule_type": "yesno"},
                              "distill": {"teacher_model": "gpt-x", "teacher_generation": {
                                  "backend": "openai", "base_url": url, "api": "chat", "api_key_env": "TEST_TEACHER_KEY"},
                                  **distill}})


def test_a_remote_teacher_without_its_key_is_refused_before_anything_is_sent(monkeypatch):
    monkeypatch.delenv("TEST_TEACHER_KEY", raising=False)
    with pytest.raises(InputError, match=r"\$TEST_TEACHER_KEY is not set.*nothing was sent"):
        check_key(remote_teacher("https://api.example.com/v1"))
    check_key(remote_teacher("http://127.0.0.1:8000/v1"))  # a local server needs none
    with pytest.raises(InputError):
        check_key(remote_teacher("http://127.0.0.1:8000/v1", teacher_requires_key="always"))
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-x")
    check_key(remote_teacher("https://api.example.com/v1"))


def test_dry_run_prints_what_would_be_sent_and_refuses_when_nothing_would_be(capsys, tmp_path):
    config = remote_teacher("https://api.example.com/v1", dry_run=True, price_input_per_mtok=2.0,
                            price_output_per_mtok=8.0, teacher_max_tokens=100)
    jobs = [{"id": f"q{i}", "prompt_text": "x", "_messages": [{"role": "user", "content": "a" * 400}]} for i in range(3)]
    out = dry_run(config, jobs, {"q0"}, tmp_path / "t.jsonl", None)
    assert out == {"would_send": 2, "estimated_prompt_tokens": 200, "max_completion_tokens": 200}
    printed = capsys.readouterr().out
    assert "would send 2 requests (1 already answered)" in printed and "$0.0020" in printed
    assert not (tmp_path / "t.jsonl").exists()
    with pytest.raises(InputError, match="nothing would be sent"):
        dry_run(config, jobs, {"q0", "q1", "q2"}, tmp_path / "t.jsonl", None)


def test_distill_config_refuses_other_rewards_and_tasks():
    from selftrain.checks import check_runnable

    with pytest.raises(InputError, match="rule_type: yesno"):
        check_runnable(load_config(None, {"method": "distill", "task": {"name": "yesno"}}))
    with pytest.raises(InputError, match="task yesno"):
        check_runnable(load_config(None, {"method": "distill", "balance_by": "",
                                          "reward_config": {"type": "rule_based", "rule_type": "yesno"}}))
    with pytest.raises(InputError, match="distill.teacher_generation.base_url"):
        load_config(None, {"distill": {"teacher_generation": {"backend": "openai"}}})
    yesno = {"method": "distill", "task": {"name": "yesno", "n_dev": 0}, "max_new_tokens": 200,
             "reward_config": {"type": "rule_based", "rule_type": "yesno"}}
    with pytest.raises(InputError, match="teacher_model: trained learns from the dev split's questions: set task.n_dev"):
        check_runnable(load_config(None, {**yesno, "distill": {"teacher_model": "trained"}}))
    check_runnable(load_config(None, {**yesno, "distill": {"teacher_max_tokens": 150}}))
    # Phase C's pair kinds and samples (on-policy pairs need two samples and a temperature)
    for distill, key in (({"draft_analysis": "before"}, "draft_analysis"), ({"policy_samples": 1}, "policy_samples"),
                         ({"policy_temperature": 0}, "policy_temperature"),
                         ({"on_policy_pairs": False}, "on_policy_pairs: Phase C needs a kind of pairs")):
        with pytest.raises(InputError, match=f"distill.{key}"):
            load_config(None, {**yesno, "distill": distill})
    d = load_config(None, yesno).distill
    assert (d.draft_analysis, d.on_policy_pairs, d.policy_samples, d.policy_temperature, d.draft_pairs,
            d.flipped_pairs) == ("drop", True, 8, 1.0, False, False)


def test_a_teacher_that_sees_facts_gets_them_after_the_question_and_a_question_without_them_is_refused():
    from selftrain.distill import teacher_record

    q = question(17, "yes")
    plain = teacher_record(q, "Answer: No - small")["prompt"]
    told = teacher_record(q, "Answer: No - small", facts=True)["prompt"]
    assert "Facts" not in plain
    assert "Question: Is 17 * 4 more than 60?\nFacts: 17 * 4 = 68.\n\nStudent draft:\nAnswer: No - small" in told
    with pytest.raises(ValueError, match="question q1: distill.teacher_sees_facts is on but it has no facts"):
        teacher_record({"id": "q1", "prompt": "Is ice cold?", "metadata": {"expected_answer": "yes"}}, "x", facts=True)
