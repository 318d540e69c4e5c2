"""What the Self-Rewarding stages share (seed 004; Yuan et al. 2024): the rule-checked truth score
of a reply, the justification an EFT target gives, and the judge's requests and scores.

Truth (`truth_score`): the paper's judge adds one point per criterion of its 5-point rubric. Here the
points come from checks a program can make, so that EFT targets are right by construction and the
judge's accuracy can be measured against them:

    +1  the reply is complete: not empty and not cut off at max_new_tokens
    +1  it is on topic: it names the prompt's topic (metadata.topic), or, for prompts without
        one, it has at least 5 words
    +3 * (instructions followed / instructions), rounded down: IFEval's strict check of each one

so a reply that follows every instruction scores 5 only when it is also complete and on topic, and
one that follows half of two instructions gets one of the three instruction points. The scores are
used for EFT targets and for metrics (judge accuracy, pair precision), never to choose pairs: the
pairs come from the model's own judgements.

Judging (`judge_jobs`, `scored_groups`): each candidate is judged `judge_samples` times with the
rubric prompt (judging.py) rendered by the one prompt builder as a user turn; job ids are
`<candidate id>@<k>`. A candidate's score is the mean of its parsed scores; judgements without a
parsable score are counted and left out, never scored 0 (`scored_groups`). With `judge_scoring: expected`
a candidate is judged once (`judgements_per_candidate`) and its score is `expected_score` of the six score
tokens' log-probabilities after the opening `score_opening` finds ("Score: " for SmolLM2).
"""
from __future__ import annotations

import re
from collections import defaultdict

from selftrain.errors import InputError
from selftrain.generation.base import SamplingParams
from selftrain.judging import NO_SCORE, OK, ParsedScore, aggregate, load_template, parse_score, render_judge_prompt
from selftrain.prompts import PromptSpec, build_messages, render_prompt
from selftrain.rewards import question_of

MIN_WORDS = 5  # "on topic" for prompts without a topic: a substantive reply
SCORES = range(6)  # the judge's scores 0..5


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def on_topic(record: dict) -> bool:
    topic = (record.get("metadata") or {}).get("topic")
    words = set(_words(record["response"]))
    if topic:
        content = [w for w in _words(topic) if len(w) > 2] or _words(topic)
        return any(w in words or w.rstrip("s") in words or w + "s" in words for w in content)
    return len(_words(record["response"])) >= MIN_WORDS


def cut_off(record: dict) -> bool:
    """Whether a reply (or a judgement) stopped at the token limit instead of ending."""
    return record.get("finish_reason") == "length"


def truth_score(record: dict) -> int:
    """The rule-checked score 0..5 of a judged record (it carries `ifeval_strict` from the ifeval reward)."""
    followed = record.get("ifeval_strict")
    if not isinstance(followed, list) or not followed:
        raise InputError(f"record {record.get('id')}: ifeval_strict: missing (judge it with the ifeval reward first)")
    complete = bool(record["response"].strip()) and not cut_off(record)
    if not record["response"].strip():
        return 0
    return int(complete) + int(on_topic(record)) + (3 * sum(map(bool, followed))) // len(followed)


def justification(record: dict, where: str = "first") -> str:
    """The EFT target for a judged record: its checks, one line each, and `Score: N` (the truth): after the
    checks (`where` "first", the paper's order), before them ("after": the score opens the judgement, so
    an expected-score judge reads it in one forward pass and still learns the checks), or alone ("none")."""
    return judgement_text(truth_score(record), check_lines(record) if where != "none" else [], where)


def judgement_text(score: int, lines: list[str], where: str) -> str:
    """A judgement that concludes `Score: N`, with its justification lines first, after the score or none."""
    if where == "none" or not lines:
        return f"Score: {score}"
    return "\n".join([f"Score: {score}"] + lines if where == "after" else lines + [f"Score: {score}"])


def check_lines(record: dict) -> list[str]:
    """What the rule checks found in a judged record, one line each (the EFT justification)."""
    from selftrain.tasks.instructions import describe

    metadata = record.get("metadata") or {}
    if not record["response"].strip():
        lines = ["The response is empty."]
    else:
        complete = not cut_off(record)
        lines = ["The response is complete." if complete else "The response is cut off before it ends."]
        topic = metadata.get("topic")
        if topic:
            lines.append(f"It is about {topic}." if on_topic(record) else f"It does not talk about {topic}.")
        else:
            lines.append("It answers the question." if on_topic(record) else "It is too short to answer.")
        for instruction, kwargs, ok in zip(metadata["instruction_id_list"], metadata["kwargs"],
                                           record["ifeval_strict"]):
            lines.append(f"- {describe(instruction, kwargs)}: {'followed' if ok else 'not followed'}")
    return lines


def judgements_per_candidate(sr) -> int:
    """Judgements each candidate gets: `judge_samples` sampled ones, or one expected score (deterministic:
    a second would repeat it)."""
    return 1 if sr.judge_scoring == "expected" else sr.judge_samples


def score_opening(tokenizer) -> tuple[str, tuple[str, ...]]:
    """How this tokenizer writes "Score: N": the opening text before the score token ("Score: " when the
    digit is a token of its own, "Score:" when the space goes with it) and the six score tokens' texts.
    Expected-score judging needs each of 0..5 to be one token after one shared opening."""
    from selftrain.generation.engine import common_prefix_length

    seqs = [tokenizer(f"Score: {d}", add_special_tokens=False)["input_ids"] for d in SCORES]
    n = common_prefix_length(seqs)
    if any(len(s) != n + 1 for s in seqs):
        raise InputError("judge_scoring expected: this tokenizer does not write each score 0..5 after 'Score:' "
                         "as one token; use self_rewarding.judge_scoring: sampled")
    return tokenizer.decode(seqs[0][:n]), tuple(tokenizer.decode(s[n:]) for s in seqs)


def expected_score(logprobs: list[float | None]) -> tuple[float | None, float]:
    """The probability-weighted mean of the scores 0..5, normalised over those six tokens (G-Eval), and
    the probability mass they hold together. Options a server did not list count as probability 0; with
    none listed there is no score (None), never a default."""
    import math

    probs = [math.exp(lp) if lp is not None else 0.0 for lp in logprobs]
    mass = sum(probs)
    if mass <= 0:
        return None, 0.0
    return sum(score * p for score, p in zip(SCORES, probs)) / mass, mass


def opening_after(justification_text: str, label: str) -> str:
    """The judge's reply up to where its score goes: its text through its last line-start "Score:" label
    (whatever it wrote after is dropped), or the whole text and a new "Score:" line when it wrote none
    (e.g. cut off): the score is read where the judge concludes, never parsed from what it wrote."""
    matches = list(re.finditer(r"^[ \t*_#-]*(?:(?:final|total|overall)[ \t]+)?score[ \t*_]*:", justification_text,
                               re.IGNORECASE | re.MULTILINE))
    if matches:
        return justification_text[:matches[-1].start()] + label
    return justification_text.rstrip() + "\n" + label


def judge_params(config) -> SamplingParams:
    sr = config.self_rewarding
    return SamplingParams(sr.judge_temperature, sr.judge_top_p, 0, sr.judge_max_new_tokens)


def judge_prompt_record(template: str, record: dict) -> dict:
    """The judge's question about one reply, as a prompt record for the one prompt builder."""
    return {"prompt": render_judge_prompt(template, question_of(record), record["response"])}


def judge_jobs(config, tokenizer, candidates: list[dict], judge_model: str, iteration: int) -> list[dict]:
    """`judge_samples` judge requests per candidate (run_jobs' job shape)."""
    template = load_template(config.self_rewarding.judge_template)
    spec = PromptSpec.from_config(config)
    jobs = []
    for candidate in candidates:
        question = judge_prompt_record(template, candidate)
        prompt_text = render_prompt(tokenizer, question, spec)
        messages = build_messages(question, spec)
        for k in range(judgements_per_candidate(config.self_rewarding)):
            jobs.append({"id": f"{candidate['id']}@{k}", "candidate_id": candidate["id"],
                         "prompt_id": candidate.get("prompt_id", candidate["id"]), "judge_idx": k,
                         "iteration": iteration, "judge": judge_model, "prompt_text": prompt_text,
                         "_messages": messages})
    return jobs


def judgement_score(judgement: dict) -> ParsedScore:
    """A judgement's score. One cut off at judge_max_new_tokens never concluded: whatever `Score:` it
    wrote before rambling on is not its verdict, so it counts as "no score"."""
    if "expected_score" in judgement:  # judge_scoring expected: read from the score tokens' probabilities
        value = judgement["expected_score"]
        return ParsedScore(value, OK) if value is not None else ParsedScore(None, NO_SCORE)
    if cut_off(judgement):
        return ParsedScore(None, NO_SCORE)
    return parse_score(judgement["response"])


def parsed_judgements(candidates: list[dict], judgements: list[dict], judge_samples: int, where: str) -> dict:
    """Per candidate id, its `judge_samples` parsed judgements (`judgement_score`). Every candidate must
    have all of them, `<id>@0` .. `<id>@{judge_samples-1}`: anything else means the judging stage did
    not finish (a hand run killed midway) or judged other candidates, and averaging fewer would be silent."""
    by_id = {j.get("id"): j for j in judgements}
    parsed, missing = {}, []
    for c in candidates:
        keys = [f"{c['id']}@{k}" for k in range(judge_samples)]
        missing += [k for k in keys if k not in by_id]
        parsed[c["id"]] = [judgement_score(by_id[k]) for k in keys if k in by_id]
    if missing:
        raise InputError(f"{where}: {len(missing)} judgements missing (e.g. {missing[0]}; "
                         f"self_rewarding.judge_samples is {judge_samples}): finish the judging stage first")
    return parsed


def same_replies(candidates: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """Per prompt (`prompt_id`, else the record's id), its distinct replies (text without surrounding
    space) -> the records that gave it, in first-seen order. Identical replies to one prompt are one
    answer: a pair of two copies teaches nothing (DPO refuses it), and one EFT example of it is enough."""
    groups: dict[str, dict[str, list[dict]]] = defaultdict(dict)
    for c in candidates:
        groups[c.get("prompt_id", c["id"])].setdefault(c["response"].strip(), []).append(c)
    return groups


def merged_reply(copies: list[dict]) -> dict:
    """One candidate of a pair's groups from the records that gave the same reply (`same_replies`): the
    first copy's `id`, `response` and `truncated`, and how many `copies` there were."""
    first = copies[0]
    return {"id": first["id"], "response": first["response"], "truncated": cut_off(first),
            "copies": len(copies)}


def scored_groups(candidates: list[dict], judgements: list[dict], judge_samples: int, where: str) -> dict:
    """Candidates per prompt, each with its judge mean (`mean_score`, None when no judgement parsed),
    the judgement counts, `truncated` and its rule-checked `true_score`.

    Replies with the same text for the same prompt are one candidate, their judgements pooled: they
    are the same answer (a pair of two copies would teach nothing, and DPO refuses it), and the judge's
    sampled disagreement about one text is noise, not a preference."""
    parsed = parsed_judgements(candidates, judgements, judge_samples, where)
    out = {}
    for prompt_id, by_text in same_replies(candidates).items():
        out[prompt_id] = []
        for copies in by_text.values():
            counts = aggregate([s for c in copies for s in parsed[c["id"]]])
            out[prompt_id].append({**merged_reply(copies), "true_score": truth_score(copies[0]),
                                   "mean_score": counts.pop("mean"), **counts})
    return out
