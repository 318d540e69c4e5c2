"""Teacher chain-of-thought distillation (seed 003): the formats every distillation stage shares.

The student drafts (`Answer: <Yes/No> - <brief reasoning>` then `Questions: ...`), the teacher
reasons about the draft in the seed's format and ends with `**YES**` / `**NO**`, and the student
is trained on two tracks whose prompts are records for the one prompt builder (prompts.py):

    Track A   question                  -> "Yes" / "No"
    Track B   question + student draft  -> the teacher's reasoning, ending in its final assessment

Track B's target is built from the teacher's reply by `reasoning_target`: its step-by-step reasoning,
then its final assessment, with the part that judges the draft dropped or moved after the verdict
(`distill.draft_analysis`), so the target reasons before it decides. Track B's prompt is also Phase
C's (DPO on the model's own samples: a correct reply chosen, a wrong one rejected) and evaluation's,
so the model is evaluated on exactly the prompt it was trained on and writes the reasoning itself
(the seed trained with the teacher's reasoning and evaluated with a "simplified reasoning context":
its format mismatch). The ablations change only the draft: none, or another question's.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

from selftrain.config import DRAFT_ANALYSIS
from selftrain.errors import InputError

ANSWERS = ("yes", "no")
# the iterations of a run: 0 the base model, 1 Track A, 2 Track B, FIRST_ROUND.. Phase C's rounds (num_rounds 3:
# one round, 4: two, ...)
FIRST_ROUND = 3

DRAFT_INSTRUCTION = (
    "Answer in exactly two lines:\n"
    "Answer: <Yes or No> - <one short reason>\n"
    "Questions: <a focused question you would check>? <your key uncertainty>?"
)

TEACHER_INSTRUCTION = (
    "A student answered a yes/no question and wrote what it is unsure about. Teach it: reason about "
    "its draft, then decide.\n\n"
    "Question: {question}\n\n"
    "Student draft:\n{draft}\n\n"
    "Reply in exactly this format:\n"
    "## Teaching Analysis\n[2-3 sentences on the student's approach]\n\n"
    "## Step-by-Step Reasoning\n[numbered steps]\n\n"
    "## Final Assessment\nBased on this analysis, the answer is: **YES** or **NO**"
)

TRACK_A_INSTRUCTION = "Answer with Yes or No."
TRACK_B_INSTRUCTION = "Reason step by step, then end with \"the answer is: **YES**\" or \"the answer is: **NO**\"."

# The seed's three sections of a teacher reply, each opened by its heading at the start of a line: "## Final
# Assessment", "**Step-by-Step Reasoning:**", "Teaching analysis" (the markdown heading or bold is optional)
ANALYSIS, REASONING, ASSESSMENT = "analysis", "reasoning", "assessment"
_SECTION_NAMES = {"teaching analysis": ANALYSIS, "step-by-step reasoning": REASONING, "final assessment": ASSESSMENT}
_HEADING = re.compile(r"^[ \t]*(?:#{1,6}[ \t]*)?(\*\*)?[ \t]*(teaching[ \t]+analysis|step[ \t-]+by[ \t-]+step[ \t]+"
                      r"reasoning|final[ \t]+assessment)\b[ \t]*:?[ \t]*(?(1)\*\*)[ \t]*:?", re.I | re.M)


def expected(record: dict) -> str:
    """The record's truth, "yes" or "no" (metadata.expected_answer)."""
    value = str(record["metadata"]["expected_answer"]).strip().lower()
    if value not in ANSWERS:
        raise ValueError(f"record {record.get('id')}: expected_answer {value!r} is not yes or no")
    return value


def question_of(record: dict) -> str:
    return record["prompt"]


# --- the prompts (records for prompts.render_prompt / build_messages) ----------------------------

def draft_prompt(record: dict) -> str:
    return f"{question_of(record)}\n\n{DRAFT_INSTRUCTION}"


def draft_record(record: dict, shots: list[dict]) -> dict:
    """What the student is asked to draft an answer to; `shots` (draft_shots): each a worked example before
    it, as a chat turn of its own (its draft prompt, then its worked draft)."""
    asked = {"id": record["id"], "prompt": draft_prompt(record), "metadata": record["metadata"]}
    if shots:
        turns = [[{"role": "user", "content": draft_prompt(s)}, {"role": "assistant", "content": worked_draft(s)}]
                 for s in shots]
        asked["messages"] = [m for pair in turns for m in pair] + [{"role": "user", "content": asked["prompt"]}]
    return asked


def worked_draft(record: dict) -> str:
    """The seed's draft format filled from a record's truth, first fact and decomposition: what the student is
    shown by example (`distill.draft_shots`)."""
    meta = record["metadata"]
    reason = meta["facts"][0].strip().rstrip(".") + "."
    checks = " ".join(q.strip().rstrip(".?") + "?" for q in meta["decomposition"])
    return f"Answer: {expected(record).capitalize()} - {reason}\nQuestions: {checks}"


def draft_shots(config) -> list[dict]:
    """The `distill.draft_shots` dev questions whose worked drafts precede every draft prompt of the run: a
    seeded choice among those with facts and a decomposition, their truths alternating yes / no (which opens:
    seeded). Dev questions only: never a question the student is trained or tested on. One call per stage."""
    n = config.distill.draft_shots
    if not n:
        return []
    usable = [r for r in questions(config, "dev") if r["metadata"].get("facts") and r["metadata"].get("decomposition")]
    rng = random.Random(f"selftrain-draft-shots:{config.seed}")
    pools = {a: [r for r in usable if expected(r) == a] for a in ANSWERS}
    for pool in pools.values():
        rng.shuffle(pool)
    first = rng.randrange(2)
    order = [ANSWERS[(first + i) % 2] for i in range(n)]
    if any(order.count(a) > len(pools[a]) for a in ANSWERS):
        raise InputError(f"distill.draft_shots {n}: the dev split has {len(pools['yes'])} yes and {len(pools['no'])} "
                         f"no questions with facts and a decomposition, too few for {n} alternating worked drafts; "
                         f"raise task.n_dev or lower distill.draft_shots")
    return [pools[a].pop() for a in order]


def teacher_record(record: dict, draft: str, facts: bool = False) -> dict:
    """What the teacher is sent about one draft; `facts` (distill.teacher_sees_facts): the question's
    supporting facts follow it (StrategyQA's `facts`), a teacher with privileged information."""
    question = question_of(record)
    if facts:
        known = record["metadata"].get("facts") or []
        if not known:
            raise ValueError(f"question {record['id']}: distill.teacher_sees_facts is on but it has no facts")
        question += "\nFacts: " + " ".join(f.strip().rstrip(".") + "." for f in known)
    return {"id": record["id"], "prompt": TEACHER_INSTRUCTION.format(question=question, draft=draft.strip()),
            "metadata": record["metadata"]}


def track_a_record(record: dict) -> dict:
    return {"id": record["id"], "prompt": f"{question_of(record)}\n{TRACK_A_INSTRUCTION}", "metadata": record["metadata"]}


def track_b_record(record: dict, draft: str | None) -> dict:
    """Track B's prompt (and Phase C's and evaluation's); `draft=None`: the no-draft ablation."""
    parts = [f"Question: {question_of(record)}"]
    if draft is not None:
        parts.append(f"Student draft:\n{draft.strip()}")
    parts.append(TRACK_B_INSTRUCTION)
    return {"id": record["id"], "prompt": "\n\n".join(parts), "metadata": record["metadata"]}


def teacher_spec(config):
    """How every request to the teacher is rendered (its replies, its training data, its judgements):
    its system prompt, no few-shot examples."""
    from selftrain.prompts import PromptSpec

    return PromptSpec(config.distill.teacher_system_prompt, 0, "", True)


# --- parsing -------------------------------------------------------------------------------------

def teacher_answer(text: str) -> str | None:
    """"yes"/"no" from the teacher's final assessment, or None (unparsable: counted, never guessed).

    The verdict is the bold **YES**/**NO** after the last "Final Assessment" heading when there is one,
    else anywhere; two different verdicts there are no answer."""
    heading = [m for m in _HEADING.finditer(text) if _section_name(m) == ASSESSMENT]
    tail = text[heading[-1].end():] if heading else text
    from selftrain.rewards.yesno import BOLD_VERDICT

    verdicts = {m.group(1).lower() for m in BOLD_VERDICT.finditer(tail)}
    return verdicts.pop() if len(verdicts) == 1 else None


def _section_name(match: re.Match) -> str:
    return _SECTION_NAMES[re.sub(r"[\s-]+", " ", match.group(2).lower()).replace("step by step", "step-by-step")]


def sections(text: str) -> list[tuple[str, str]]:
    """The reply cut at the seed's headings, in order: (name, text from its heading line to the next
    heading), name "analysis", "reasoning" or "assessment"; the text before the first heading, when
    there is any, is a first part named "preamble"."""
    heads = list(_HEADING.finditer(text))
    parts = [("preamble", text[:heads[0].start()] if heads else text)]
    for m, following in zip(heads, heads[1:] + [None]):
        parts.append((_section_name(m), text[m.start():following.start() if following else len(text)]))
    return [(name, part.strip()) for name, part in parts if part.strip()]


def reasoning_target(reply: str, draft_analysis: str) -> tuple[str | None, str]:
    """The student's target built from a teacher's reply, and "ok", or (None, why not).

    `drop` and `after`: the reply's reasoning and assessment sections in its own order, so the target
    opens with the reasoning; its teaching analysis (and any text before the first heading) is dropped
    or follows the assessment. `first`: the reply as written (the seed's order, for the measurement).
    No target ("no_reasoning") when the reply has no Step-by-Step Reasoning section, and none
    ("verdict_lost") when the target, read as the evaluation reads a reply (the yesno reward), does not
    give the reply's verdict: the verdict sat in the dropped part, or the moved analysis ends in another."""
    from selftrain.rewards.yesno import extract_yes_no

    if draft_analysis not in DRAFT_ANALYSIS:
        raise ValueError(f"distill.draft_analysis {draft_analysis!r} is not one of {', '.join(DRAFT_ANALYSIS)}")
    parts = sections(reply)
    if not any(name == REASONING for name, _ in parts):
        return None, "no_reasoning"
    if draft_analysis == "first":
        target = reply.strip()
    else:
        kept = [part for name, part in parts if name in (REASONING, ASSESSMENT)]
        moved = [part for name, part in parts if name == ANALYSIS] if draft_analysis == "after" else []
        target = "\n\n".join(kept + moved)
    if extract_yes_no(target) is None or extract_yes_no(target) != teacher_answer(reply):
        return None, "verdict_lost"
    return target, "ok"


def kept_target(reply: dict, truth: str | None, draft_analysis: str) -> tuple[str | None, str]:
    """The student's target from one teacher reply record (teacher.py's `response` and `teacher_answer`) and
    "ok", or (None, why not): the one rule of which teacher replies the student is trained on.

    Kept: a final assessment was parsed (`teacher_answer`, None for a reply cut off), it agrees with the
    question's `truth`, and `reasoning_target` builds a target from the reply. Not kept: "unparsable",
    "disagrees", or reasoning_target's "no_reasoning" / "verdict_lost"."""
    answer = reply.get("teacher_answer")
    if answer is None:
        return None, "unparsable"
    if answer != truth:
        return None, "disagrees"
    return reasoning_target(reply["response"], draft_analysis)


def flip_verdict(text: str) -> str:
    """The teacher's reply with its final verdict turned round (**YES** <-> **NO**): the seed's "flipped
    preference", a rejected answer that differs from the chosen one only where it decides."""
    from selftrain.rewards.yesno import BOLD_VERDICT

    last = list(BOLD_VERDICT.finditer(text))
    if not last or teacher_answer(text) is None:
        raise ValueError("the reply has no final verdict to flip")
    m = last[-1]
    flipped = "NO" if m.group(1).lower() == "yes" else "YES"
    return f"{text[:m.start()]}**{flipped}**{text[m.end():]}"


def draft_answer(text: str) -> str | None:
    """The yes/no of a student draft (its `Answer:` line, or a bare first word), None when unclear."""
    from selftrain.rewards.yesno import extract_yes_no

    return extract_yes_no(text)


# --- the demo's teacher: the seed's format filled from a record's facts ----------------------------

def gold_teacher_reply(record: dict, draft: str) -> str:
    """The seed's teacher format written from the record's decomposition and facts and its truth: the
    target a local teacher is trained on (`distill.teacher_model: trained`)."""
    truth = expected(record)
    said = draft_answer(draft)
    meta = record["metadata"]
    steps = _steps(list(meta.get("decomposition") or []), list(meta.get("facts") or []), truth)
    if said is None:
        analysis = "The draft gives no clear yes or no."
    elif said == truth:
        analysis = f"The draft answers {said.capitalize()}, which is right."
    else:
        analysis = f"The draft answers {said.capitalize()}, but the facts say otherwise."
    lead = meta.get("decomposition") or meta.get("facts") or []
    if lead:
        analysis += f" The key step is: {lead[0]}"
    numbered = "\n".join(f"{i}. {step}" for i, step in enumerate(steps, 1))
    return (f"## Teaching Analysis\n{analysis}\n\n## Step-by-Step Reasoning\n{numbered}\n\n"
            f"## Final Assessment\nBased on this analysis, the answer is: **{truth.upper()}**")


def _steps(decomposition: list[str], facts: list[str], truth: str) -> list[str]:
    if not decomposition and not facts:
        return [f"The answer is {truth}."]
    if len(decomposition) == len(facts):  # each sub-question answered by its fact
        return [f"{q} {f}" for q, f in zip(decomposition, facts)] + [f"So the answer is {truth}."]
    if len(decomposition) == len(facts) + 1:  # sub-questions answered by the facts, the last by the verdict
        return [f"{q} {f}" for q, f in zip(decomposition, facts)] + [f"{decomposition[-1]} {truth.capitalize()}."]
    return facts + [f"So the answer is {truth}."]


def shuffled(ids: list[str], seed: int) -> dict[str, str]:
    """A derangement of `ids`, seeded: each id -> another id (whose draft it gets in the ablation)."""
    if len(ids) < 2:
        raise ValueError("the shuffled-draft ablation needs at least two questions")
    order = list(ids)
    rng = random.Random(f"selftrain-shuffled-drafts:{seed}")
    rng.shuffle(order)
    return {a: b for a, b in zip(order, order[1:] + order[:1])}  # a cycle: nobody keeps its own


# --- which questions -----------------------------------------------------------------------------

TRAINED_TEACHER = "trained"  # distill.teacher_model: the teacher this run trains (teacher_run_dir)


def teacher_run_dir(run_dir) -> Path:
    """Where a run trains its own teacher (`teacher_model: trained`): a run of its own inside the run."""
    return Path(run_dir) / "teacher"


def questions(config, split: str) -> list[dict]:
    """The questions of a split: `distill.dataset` (StrategyQA) or the built-in yesno task.

    A StrategyQA folder gives each split its own file ({split}.jsonl / .json); one file (the official
    train.json, the only one with answers) or a hub id is one set, carved into disjoint splits."""
    if config.distill.dataset:
        from selftrain.tasks.strategyqa import carve_splits, load_strategyqa

        source = config.distill.dataset
        if Path(source).expanduser().is_dir():
            return load_strategyqa(source, split)
        t = config.task
        sizes = {"test": t.n_test, "dev": t.n_dev, "train": t.n_train}
        return carve_splits(load_strategyqa(source, "train"), sizes, config.seed, source)[split]
    from selftrain.data import load_task_split

    return load_task_split(config, split)


def drafted_questions(config) -> dict[str, list[dict]]:
    """Per split, the questions the student drafts: `train_samples` training questions (a seeded sample,
    0: all), the dev questions a trained teacher learns from, every test question."""
    train = questions(config, "train")
    n = config.distill.train_samples
    if n and n < len(train):
        train = random.Random(f"selftrain-distill-train:{config.seed}").sample(train, n)
    out = {"train": train}
    if config.distill.teacher_model == TRAINED_TEACHER:
        out["dev"] = questions(config, "dev")[: config.distill.teacher_train_questions]
    out["test"] = questions(config, "test")
    if config.eval_max_samples:
        out["test"] = out["test"][: config.eval_max_samples]
    return out
