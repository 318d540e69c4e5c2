"""The attribution check (selftrain/attribution.py, attribution.py): the verdict it attributes, the draft's
tokens it locates, shares that sum to 1 over the prompt, skipped replies, and the stage's files."""
import json

import pytest
import torch

from selftrain.attribution import (attribute_questions, encode, integrated_gradients, shares, summarize,
                                   verdict_logprob, verdict_span)
from selftrain.distill import track_b_record
from selftrain.errors import InputError
from selftrain.prompts import PromptSpec

QUESTION = "Is 17 + 25 more than 40?"
DRAFT = "Answer: No - 17 + 25 is about 40.\nQuestions: What is 17 + 25? Is 42 above 40?"
REPLY = "1. 17 + 25 = 42.\n2. 42 is more than 40.\n\n## Final Assessment\nBased on this analysis, the answer is: **YES**"
SPEC = PromptSpec("You are a careful student.")


def draft_row(i: int, answer: str = "yes") -> dict:
    return {"id": f"q{i}", "split": "test", "prompt": f"{QUESTION} ({i})", "response": DRAFT,
            "metadata": {"expected_answer": answer}}


def item(test: dict, reply: str) -> dict:
    return {"record": track_b_record(test, test["response"]), "test": test, "reply": reply, "source": "eval"}


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from selftrain.models import load_model

    model = load_model(tiny_model_dir, dtype="fp32", device="cpu")
    model.requires_grad_(False)
    return model


def test_verdict_span_is_the_final_bold_verdict():
    answer, start, end = verdict_span(REPLY)
    assert (answer, REPLY[start:end]) == ("yes", "YES") and end == len(REPLY) - 2
    text = "The draft says **YES**.\nSo the answer is: **[no]**."
    answer, start, end = verdict_span(text)
    assert (answer, text[start:end], start) == ("no", "no", text.rindex("no"))
    assert verdict_span("Answer: Yes - it is") is None  # no bold verdict
    assert verdict_span("the answer is: **YES** or **NO**") is None  # both on its last verdict line


@pytest.mark.parametrize("chat", [True, False])
def test_draft_and_question_tokens_are_located_exactly(tokenizer, chat):
    spec = PromptSpec(SPEC.system_prompt, use_chat_template=chat)
    test = draft_row(1)
    encoded = encode(tokenizer, spec, track_b_record(test, DRAFT), test["prompt"], DRAFT, REPLY)
    prompt = encoded.input_ids[:encoded.prompt_len]
    where = {p: [i for i, part in enumerate(encoded.parts) if part == p] for p in ("draft", "question")}
    for part, text in (("draft", DRAFT), ("question", test["prompt"])):
        positions = where[part]
        assert positions == list(range(positions[0], positions[-1] + 1))  # one contiguous run
        # exactly its tokens: a word's token carries the space before it ("Question: Is" -> " Is")
        assert tokenizer.decode([prompt[i] for i in positions]) in (text, " " + text)
    assert where["question"][-1] < where["draft"][0]
    assert len(encoded.parts) == encoded.prompt_len
    # the target: the verdict's tokens, the last of them cut from the input (it is only predicted)
    assert tokenizer.decode(encoded.targets) == "YES" and encoded.verdict == "yes"
    assert tokenizer.decode(encoded.input_ids[encoded.prompt_len:] + encoded.targets[-1:]).endswith("is: **YES")


def test_no_verdict_gives_no_example(tokenizer):
    test = draft_row(1)
    assert encode(tokenizer, SPEC, track_b_record(test, DRAFT), test["prompt"], DRAFT, "I think it is yes.") is None


def test_target_is_the_verdict_log_probability(tokenizer, tiny_model):
    test = draft_row(1)
    encoded = encode(tokenizer, SPEC, track_b_record(test, DRAFT), test["prompt"], DRAFT, REPLY)
    full = encoded.input_ids + encoded.targets[-1:]
    n = len(encoded.targets)
    assert full[-n:] == encoded.targets  # the verdict's tokens end the sequence
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model(input_ids=torch.tensor([full])).logits[0].float(), -1)
    want = sum(logp[k - 1, full[k]].item() for k in range(len(full) - n, len(full)))
    got = verdict_logprob(tiny_model, torch.tensor(encoded.targets))(torch.tensor([encoded.input_ids])).item()
    assert got == pytest.approx(want, abs=1e-4)


def test_shares_sum_to_one_over_the_prompt(tokenizer, tiny_model):
    test = draft_row(1)
    encoded = encode(tokenizer, SPEC, track_b_record(test, DRAFT), test["prompt"], DRAFT, REPLY)
    result = integrated_gradients(tiny_model, encoded, tokenizer.pad_token_id, n_steps=8, batch_size=3)
    per_token = result["per_token"]
    assert per_token.shape == (len(encoded.input_ids),)
    assert torch.all(per_token[encoded.prompt_len:] == 0)  # the reply is in the baseline too: no attribution
    assert per_token[:encoded.prompt_len].abs().sum() > 0
    share = shares(per_token, encoded)
    assert len(share) == encoded.prompt_len and min(share) >= 0
    assert sum(share) == pytest.approx(1.0, abs=1e-9)
    # Captum's delta: the attributions' sum less the change of the target from the baseline to the input
    change = result["logprob"] - result["baseline_logprob"]
    assert result["delta"] == pytest.approx(per_token.double().sum().item() - change, abs=1e-3)
    rows, skipped = attribute_questions(tiny_model, tokenizer, SPEC, [item(test, REPLY)],
                                        baseline_id=tokenizer.pad_token_id, n_steps=8, batch_size=8)
    row = rows[0]
    assert sum(row["share"].values()) == pytest.approx(1.0, abs=1e-5)
    assert row["share"]["draft"] == pytest.approx(sum(s for s, p in zip(share, encoded.parts) if p == "draft"), abs=1e-5)
    assert row["tokens"]["draft"] == encoded.parts.count("draft") > 0
    assert (row["verdict"], row["correct"], row["draft_answer"], row["agrees_with_draft"]) == ("yes", True, "no", False)


def test_reply_without_verdict_is_skipped_and_counted(tokenizer, tiny_model):
    items = [item(draft_row(1), REPLY), item(draft_row(2, "no"), "Answer: No - it is less."), item(draft_row(3), "")]
    rows, skipped = attribute_questions(tiny_model, tokenizer, SPEC, items, baseline_id=tokenizer.pad_token_id,
                                        n_steps=4, batch_size=4)
    assert [r["id"] for r in rows] == ["q1"]
    assert skipped == {"no_verdict": ["q2", "q3"], "zero_attribution": []}
    summary = summarize(rows, skipped, len(items))
    assert (summary["questions"], summary["attributed"], summary["skipped"]) == (3, 1, {"no_verdict": 2, "zero_attribution": 0})
    assert summary["draft_share"] == round(rows[0]["share"]["draft"], 4)
    assert summary["draft_share"] + summary["question_share"] + summary["rest_share"] == pytest.approx(1.0, abs=1e-3)


def write_marker(directory, stage: str, output: str, **extra) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stage}.done").write_text(json.dumps({"output": output, **extra}))


def test_stage_reads_eval_replies_generates_the_rest_and_finishes(tmp_path, tiny_model_dir):
    from selftrain.stages.attribution import main

    run_dir = tmp_path / "run"
    tests = [draft_row(1), draft_row(2, "no"), draft_row(3), draft_row(4)]
    (run_dir / "iter_00").mkdir(parents=True)
    (run_dir / "iter_00" / "drafts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tests))
    write_marker(run_dir / "iter_00", "drafts", "drafts.jsonl")
    results = [{"id": "q1", "response": REPLY}, {"id": "q2", "response": "It is not."}]  # q3: not evaluated
    (run_dir / "iter_02").mkdir()
    (run_dir / "iter_02" / "eval_x.json").write_text(json.dumps({"variant": "b", "results": results}))
    write_marker(run_dir / "iter_02", "eval", "eval_x.json", metrics={"variant": "b"}, model=tiny_model_dir)
    argv = ["--run_dir", str(run_dir), "--iteration", "2", "--model", tiny_model_dir, "--set", "max_new_tokens=8",
            "--set", "distill.attribution_questions=3", "--set", "distill.attribution_steps=4"]
    main(argv)
    marker = json.loads((run_dir / "iter_02" / "attribution.done").read_text())
    out = json.loads((run_dir / "iter_02" / marker["output"]).read_text())
    assert marker["replies"] == str(run_dir / "iter_02" / "eval_x.json") and marker["model"] == tiny_model_dir
    assert out["questions"] == 3  # distill.attribution_questions: the first 3 test questions
    by_id = {r["id"]: r for r in out["results"]}
    assert by_id["q1"]["reply_source"] == "eval" and "q2" in out["skipped_ids"]["no_verdict"]
    # q3's reply was generated by the tiny model: attributed (from "generated") or skipped for having no verdict
    assert by_id.get("q3", {}).get("reply_source") == "generated" or "q3" in out["skipped_ids"]["no_verdict"]
    assert out["attributed"] + sum(out["skipped"].values()) == 3
    assert (out["n_steps"], out["dtype"], out["variant"]) == (4, "float32", "b")
    assert sum(by_id["q1"]["share"].values()) == pytest.approx(1.0, abs=1e-5)
    main(argv)  # the marker exists: nothing to do, nothing rewritten
    assert json.loads((run_dir / "iter_02" / "attribution.done").read_text()) == marker


def test_config_keys_are_checked():
    from selftrain.config import load_config

    with pytest.raises(InputError, match="distill.attribution_steps: 0 must be >= 1"):
        load_config(None, {"distill.attribution_steps": 0})
    with pytest.raises(InputError, match="distill.attribution_questions: -1 must be >= 0"):
        load_config(None, {"distill.attribution_questions": -1})


def test_bad_input_stops_before_any_output(tmp_path, tiny_model_dir):
    from selftrain.stages.attribution import main

    run_dir = tmp_path / "run"
    argv = ["--run_dir", str(run_dir), "--iteration", "2", "--model", tiny_model_dir]
    with pytest.raises(InputError, match=r"iter_00/drafts\.done: missing"):
        main(argv)
    with pytest.raises(InputError, match="give --run_dir"):
        main(["--model", tiny_model_dir])
    (run_dir / "iter_00").mkdir(parents=True)
    (run_dir / "iter_00" / "drafts.jsonl").write_text(json.dumps(draft_row(1)) + "\n")
    write_marker(run_dir / "iter_00", "drafts", "drafts.jsonl")
    (run_dir / "iter_02").mkdir()
    (run_dir / "iter_02" / "eval_x.json").write_text("{not json")
    write_marker(run_dir / "iter_02", "eval", "eval_x.json", metrics={"variant": "b"}, model=tiny_model_dir)
    with pytest.raises(InputError, match=r"eval_x\.json: not a distill_eval results file"):
        main(argv)
    assert sorted(p.name for p in (run_dir / "iter_02").iterdir()) == ["eval.done", "eval_x.json"]
