"""Phase C's on-policy round (seed 003's "self-guided loop"): the pairs from a round's judged samples on a
fixture (no pair from a question whose samples are all right or all wrong, a cut-off reply never chosen,
the chosen verdicts balanced, a seeded pick), the samples stage on a tiny model (Track B's exact prompt,
every validated question once), the pairs stage's files, and the chain `make -n rounds` plans."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from selftrain.config import load_config
from selftrain.errors import InputError
from selftrain.prompts import PromptSpec, render_prompt
from selftrain.records import read_jsonl, write_jsonl_atomic
from selftrain.rewards.yesno import extract_yes_no
from selftrain.runs import stage_output
from selftrain.stages.distill_data import pairs, track_b
from selftrain.stages.on_policy import policy_pairs, policy_prompts

REPO = Path(__file__).resolve().parents[1]
YESNO = {"method": "distill", "task": {"name": "yesno"}, "reward_config": {"type": "rule_based", "rule_type": "yesno"}}
SPEC = PromptSpec("", 0, "", True)


def reply(verdict: str | None, tag: str) -> str:
    end = f"the answer is: **{verdict.upper()}**" if verdict else "I cannot tell."
    return f"## Step-by-Step Reasoning\n1. Step {tag}.\n\n## Final Assessment\n{end}"


def test_policy_questions_a_seeded_draw_per_round_in_the_validated_order():
    kept = [{"id": f"q{i}", "prompt": f"Is {i} more than 5?", "metadata": {"expected_answer": "yes"},
             "draft": f"Answer: Yes - draft {i}"} for i in range(20)]
    kept.append({**kept[7], "id": "q7~up1"})  # an upsampled copy: still one question
    every = [p["id"] for p in policy_prompts(kept)]
    assert every == [f"q{i}" for i in range(20)]
    assert [p["id"] for p in policy_prompts(kept, 25, "0:policy:3")] == every  # more than there are: all of them
    round3 = [p["id"] for p in policy_prompts(kept, 6, "0:policy:3")]
    assert len(round3) == 6 and round3 == [q for q in every if q in round3]  # the validated order kept
    assert round3 == [p["id"] for p in policy_prompts(kept, 6, "0:policy:3")]  # deterministic
    assert round3 != [p["id"] for p in policy_prompts(kept, 6, "0:policy:4")]  # another round, another draw
    assert set(round3) <= {p["id"] for p in policy_prompts(kept, 12, "0:policy:3")}  # N grows: the draw extends
    assert "Student draft:\nAnswer: Yes - draft" in policy_prompts(kept, 6, "0:policy:3")[0]["prompt"]


def sample(question: str, truth: str, j: int, text: str, cut_off: bool = False) -> dict:
    """A judged sample as judge.py writes it with the yesno reward."""
    predicted = extract_yes_no(text)
    return {"id": f"{question}#{j}", "prompt_id": question, "sample_idx": j, "prompt_text": f"<prompt of {question}>",
            "response": text, "finish_reason": "length" if cut_off else "stop", "metadata": {"expected_answer": truth},
            "reward_score": float(predicted == truth), "is_correct": predicted == truth,
            "answer_found": predicted is not None, "predicted": predicted}


def round_fixture() -> list[dict]:
    """Nine questions: all right, all wrong, right only when cut off, three mixed "yes" and two mixed "no"
    (one of them whose only wrong reply is cut off), one with an empty reply."""
    rows = []
    plan = {"all_right": ("yes", [("yes", False), ("yes", False), ("yes", False)]),
            "all_wrong": ("no", [("yes", False), (None, False), ("yes", True)]),
            "right_cut": ("yes", [("yes", True), ("no", False), ("no", False)]),
            "mixed_y1": ("yes", [("no", False), ("yes", True), ("yes", False)]),
            "mixed_y2": ("yes", [("yes", False), (None, False), ("no", False)]),
            "mixed_y3": ("yes", [("no", False), ("yes", False)]),
            "mixed_n1": ("no", [("no", False), ("yes", False), ("no", False)]),
            "mixed_n2": ("no", [("yes", True), ("no", False)]),
            "empty": ("no", [("no", False), ("", False)])}
    for q, (truth, said) in plan.items():
        for j, (verdict, cut) in enumerate(said):
            text = "" if verdict == "" else reply(verdict, f"{q}-{j}")
            rows.append(sample(q, truth, j, text, cut))
    return rows


def test_only_questions_with_a_right_and_a_wrong_finished_reply_give_pairs_and_the_chosen_are_balanced():
    judged = round_fixture()
    config = load_config(None, YESNO)
    rows, m = pairs(config, [], judged, None, SPEC)
    by_id = {s["id"]: s for s in judged}
    built = {r["prompt_id"] for r in policy_pairs(config, judged, SPEC, "judged")[0]}
    assert built == {"mixed_y1", "mixed_y2", "mixed_y3", "mixed_n1", "mixed_n2"}  # all right / all wrong / cut: none
    assert (m["questions_all_correct"], m["questions_all_wrong"], m["questions_mixed"]) == (1, 1, 7)
    assert m["pair_reasons"] == {"paired": 5, "tie": 2, "too_few_scored": 1, "no_untruncated_top": 1}
    assert m["samples"] == 24 and m["sample_accuracy"] == 0.5 and m["empty_samples"] == 1  # 12 right
    assert m["on_policy_classes"] == {"no": 2, "yes": 3} and m["pairs_built"] == 5
    assert m["classes"] == {"no": 2, "yes": 2} and m["pairs"] == 4  # the chosen verdicts: 50/50, the larger class cut
    for r in rows:
        chosen, rejected = by_id[r["chosen_id"]], by_id[r["rejected_id"]]
        assert chosen["is_correct"] and chosen["finish_reason"] == "stop" and r["chosen"] == chosen["response"]
        assert not rejected["is_correct"] and r["rejected"] == rejected["response"] and r["rejected"].strip()
        assert extract_yes_no(r["chosen"]) == r["metadata"]["expected_answer"] == r["chosen_answer"]
        assert r["kind"] == "on_policy" and r["prompt"] == f"<prompt of {r['prompt_id']}>"
    cut_rejected = [r for r in rows if r["rejected_cut_off"]]
    assert all(r["prompt_id"] == "mixed_n2" for r in cut_rejected)  # a cut-off reply may be rejected
    assert {r["rejected_kind"] for r in rows} <= {"wrong_sample", "unclear_sample"}


def test_a_cut_off_reply_is_never_chosen_and_the_pick_among_equals_is_seeded():
    judged = [sample("q", "yes", 0, reply("yes", "cut"), cut_off=True)]
    judged += [sample("q", "yes", j, reply("yes", f"right {j}")) for j in range(1, 7)]
    judged += [sample("q", "yes", j, reply("no", f"wrong {j}")) for j in range(7, 13)]
    picks = set()
    for seed in range(12):
        config = load_config(None, {**YESNO, "balance_by": "", "seed": seed})
        (row,), _ = policy_pairs(config, judged, SPEC, "judged")
        assert row["chosen_id"] != "q#0"
        assert policy_pairs(config, judged, SPEC, "judged")[0][0]["chosen_id"] == row["chosen_id"]  # reproducible
        picks.add((row["chosen_id"], row["rejected_id"]))
    assert len(picks) > 3  # not always the first right and the first wrong reply


def test_no_pair_at_all_stops_the_round_with_the_reasons():
    judged = [s for s in round_fixture() if s["prompt_id"] in ("all_right", "all_wrong", "right_cut")]
    with pytest.raises(InputError, match=r"pairs: no preference pair.*of 3 questions 1 had only correct samples, 1 "
                                         r"only wrong ones, 1 both \(1 of them with only cut-off correct replies\)"):
        pairs(load_config(None, YESNO), [], judged, None, SPEC)
    one_class = [s for s in round_fixture() if s["prompt_id"].startswith("mixed_y")]
    with pytest.raises(InputError, match="pairs: balance_by answer: no example of class no is left"):
        pairs(load_config(None, YESNO), [], one_class, None, SPEC)
    rows, m = pairs(load_config(None, {**YESNO, "balance_by": ""}), [], one_class, None, SPEC)
    assert m["classes"] == {"yes": 3}  # balance_by '' keeps the skew (the tiny config's few questions)


# --- the stages on files --------------------------------------------------------------------------

def kept_rows() -> list[dict]:
    truths = ["yes", "no", "yes", "no"]
    rows = [{"id": f"q{i}", "prompt": f"Is {i} * 4 more than 10?", "metadata": {"expected_answer": t},
             "draft": f"Answer: No - draft {i}", "draft_answer": "no", "teacher_response": reply(t, str(i)),
             "teacher_answer": t, "teacher_finish_reason": "stop", "target": reply(t, str(i))}
            for i, t in enumerate(truths)]
    return rows + [dict(rows[0], id="q0~up1")]  # an upsampled copy: the same question


def write_stage(config, run_dir: Path, iteration: int, stage: str, rows: list[dict]) -> Path:
    out = stage_output(stage, explicit=None, run_dir=str(run_dir), iteration=iteration, default="")
    out.path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out.path, rows)
    out.finish(config, {})
    return out.path


def distill_config(tmp_path: Path, model_dir: str, **distill) -> Path:
    path = tmp_path / "distill.json"
    path.write_text(json.dumps({**YESNO, "base_model_path": model_dir, "max_new_tokens": 6, "batch_size": 8,
                                "task": {"name": "yesno", "n_dev": 0}, "balance_by": "",
                                "distill": {"teacher_max_tokens": 6, "policy_samples": 3, **distill}}))
    return path


def test_the_samples_stage_asks_the_previous_model_on_track_bs_exact_prompt(tmp_path, tiny_model_dir, tokenizer):
    from selftrain.stages.on_policy import main

    path = distill_config(tmp_path, tiny_model_dir)
    config = load_config(path)
    run_dir = tmp_path / "run"
    kept = kept_rows()
    write_stage(config, run_dir, 1, "validated", kept)
    args = ["--config", str(path), "--run_dir", str(run_dir), "--set", "dtype=fp32", "--model", tiny_model_dir]
    with pytest.raises(InputError, match="iterations >= 3"):
        main(args + ["--iteration", "2"])
    main(args + ["--iteration", "3"])
    marker = json.loads((run_dir / "iter_03" / "samples.done").read_text())
    samples = read_jsonl(run_dir / "iter_03" / marker["output"])
    assert marker["model"] == tiny_model_dir and marker["metrics"]["questions"] == 4
    assert [s["id"] for s in samples] == [f"q{i}#{j}" for i in range(4) for j in range(3)]  # q0 once
    trained, _ = track_b(kept[:4], tokenizer, PromptSpec.from_config(config))
    prompt_of = {t["id"]: t["prompt_text"] for t in trained}
    for s in samples:
        assert s["prompt_text"] == prompt_of[s["prompt_id"]]  # Track B's training (and evaluation) prompt
        assert s["metadata"]["expected_answer"] == kept[int(s["prompt_id"][1:])]["metadata"]["expected_answer"]
        assert s["finish_reason"] in ("stop", "length") and s["iteration"] == 3
    assert render_prompt(tokenizer, {"prompt": "x"}, PromptSpec.from_config(config)) not in prompt_of.values()


def test_the_pairs_stage_reads_the_rounds_judged_samples_and_writes_dpo_pairs(tmp_path, tiny_model_dir):
    from selftrain.stages.distill_data import main
    from selftrain.stages.train_dpo import read_pairs_file

    path = distill_config(tmp_path, tiny_model_dir, max_pairs=3)
    config = load_config(path)
    run_dir = tmp_path / "run"
    write_stage(config, run_dir, 1, "validated", kept_rows())
    write_stage(config, run_dir, 3, "judged", round_fixture())
    main(["--config", str(path), "--run_dir", str(run_dir), "--iteration", "3", "--kind", "pairs"])
    marker = json.loads((run_dir / "iter_03" / "pairs.done").read_text())
    m = marker["metrics"]
    assert m["pairs_built"] == 5 and m["pairs"] == 3 and m["kinds"] == {"on_policy": 3}
    assert (m["samples"], m["questions_mixed"]) == (24, 7)
    rows, spec = read_pairs_file(run_dir / "iter_03" / marker["output"])  # what train_dpo.py reads
    assert len(rows) == 3 and spec == PromptSpec.from_config(config)
    with pytest.raises(InputError, match="Phase C's rounds are iterations >= 3"):
        main(["--config", str(path), "--run_dir", str(run_dir), "--iteration", "2", "--kind", "pairs"])


def test_make_plans_phase_c_rounds_on_policy_and_every_model_on_every_variant(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    proc = subprocess.run(["make", "-n", "rounds", "CONFIG=configs/distill_tiny.yaml", "RUN=plan", "ROUNDS=4",
                           f"RESULTS={tmp_path}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    planned = re.findall(r"(\w+)\.py --config configs/distill_tiny\.yaml --run_dir \S+?(/teacher)? --iteration (\d+)"
                         r"(?: --kind (\w+)| --variants (\S+))?", proc.stdout)
    steps = [(script + teacher, int(n), kind or variants) for script, teacher, n, kind, variants in planned]
    every = "a,b,no_draft,shuffled"
    on_policy_round = [("distill_samples", "distill_samples", ""), ("judge", "judge", ""),
                       ("distill_data", "distill_data", "pairs"), ("train_dpo", "train_dpo", ""),
                       ("distill_eval", "distill_eval", "b,no_draft,shuffled,a")]
    assert steps == [("drafts", 0, ""), ("distill_eval", 0, every),
                     ("distill_data/teacher", 1, "teacher_data"), ("train/teacher", 1, ""), ("teacher", 1, ""),
                     ("distill_data", 1, "validated"), ("distill_data", 1, "track_a"), ("train", 1, ""),
                     ("distill_eval", 1, every), ("distill_data", 2, "track_b"), ("train", 2, ""),
                     ("distill_eval", 2, "b,no_draft,shuffled,a")] + [
        (script, n, arg) for n in (3, 4) for script, _, arg in on_policy_round]
    assert "create_data.py" not in proc.stdout  # common.mk's samples rule is replaced for this method
    assert not list(tmp_path.iterdir())  # a plan writes nothing
