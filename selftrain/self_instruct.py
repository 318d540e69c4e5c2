"""Self-Instruct for Self-Rewarding (seed 004 step 1, "sample some instruction from an instruct model").

With `self_rewarding.self_instruct: true`, the prompts of iteration t >= 2 are written by M_{t-1} itself,
as in the paper (§3.1.2: new prompts from 8-shot prompting on the seed data, after Self-Instruct, Wang et
al. 2023), instead of being taken from the task's pool. The stage (selftrain/stages/self_instruct.py)
asks for `self_instruct_prompts` requests; this module holds its rules:

Seed pool (`seed_pool`): the `prompt` of each line of `self_instruct_file`, or, when it is empty, the
task's IFT-split prompts with their checkable instructions taken off (the bare request, "Describe owls.",
as the model is to write it: the instructions are attached afterwards, below).

Few-shot prompt (`fewshot_prompt`): request i shows `self_instruct_shots` seed requests, drawn by a seeded
RNG from the pool (`choose_shots`: depends on seed, iteration and i only), as a numbered list the model
continues (the layout of Self-Instruct and of AutoAlign's instruction generator: "1. ... 4. ...", then
the model writes item 5), begun in the assistant's turn. The reply's first line is the request
(`extract_request`: a list number, a "Request:" label and wrapping quotes are taken off); the items the
model goes on to write after it are not used.

Kept only if usable, checked in this order (the first failed check is the drop reason, `REASONS`):
    empty            nothing left after the clean-up
    cut_off          the reply hit max_new_tokens before the request's line ended
    too_short        fewer than MIN_WORDS words (the shortest built-in request, "Describe owls.", has 2)
    too_long         more than MAX_WORDS words (Self-Instruct's bound)
    not_text         names something a text model cannot take or give (Self-Instruct's keyword filter:
                     image, graph, picture, file, map, draw, plot, go to)
    not_a_request    does not start with a letter, or reads as no request: it neither ends with "?" nor
                     has a sentence opening with a request word (write, describe, explain, what, how, can,
                     please, ... `REQUEST_WORDS`); a model answering instead ("Sure! Here ...") fails here
    copy_of_shot     near-duplicate of one of the seed requests its own prompt showed
    duplicate_of_seed  near-duplicate of another seed request
    duplicate        near-duplicate of a request kept earlier in this iteration (canonical order)
    held_out         with its instructions, word for word an evaluation prompt (never trained on)
Near-duplicate: ROUGE-L F1 over lower-cased alphanumeric word tokens above SIMILARITY_LIMIT (0.7, Self-
Instruct's rule; `rouge_l`, in house: the longest common subsequence of words), found without comparing
every pair (`NearDuplicates`: a word index bounds the overlap first).

Instructions (`attach_instructions`): for the ifeval reward (the only one method self_rewarding runs) the
task generator's instruction machinery (selftrain/tasks/instructions.py: its 12 types, conflict table,
explicit kwargs and IFEval's own instruction texts) gives every kept request 1-2 checkable instructions,
so the rule checks and the judge's truth score apply to model-written prompts as to the pool's. The
first type cycles through the 12 types over the kept prompts (as the generator balances a split); a
keyword to include is drawn from the request's own content words; a forbidden word never occurs in it.
"""
from __future__ import annotations

import random
import re
from collections import Counter, defaultdict

from selftrain.errors import InputError

SIMILARITY_LIMIT = 0.7  # ROUGE-L F1 above this: a near-duplicate (Self-Instruct; AutoAlign's prompts_filter)
MIN_WORDS = 2  # "Describe owls." is a request; "Owls." is not
MAX_WORDS = 150  # Self-Instruct's upper bound
REASONS = ("empty", "cut_off", "too_short", "too_long", "not_text", "not_a_request", "copy_of_shot",
           "duplicate_of_seed", "duplicate", "held_out")
# Self-Instruct's filter (`post_process_gpt3_response`): requests a text-only model cannot serve
NOT_TEXT = re.compile(r"\b(images?|graphs?|pictures?|files?|maps?|draw|plot|go to)\b", re.IGNORECASE)
REQUEST_WORDS = frozenset("""
    write describe explain give list tell summarize summarise create compose suggest share name compare plan
    make draft help imagine recommend provide outline translate rewrite generate design prepare find discuss
    argue propose invent brainstorm teach show convince persuade answer define identify classify rank sort
    choose pick offer pretend act come think consider calculate solve paraphrase edit correct continue
    what why how who when where which can could would should is are do does did will please
    """.split())
ASK = "Write a numbered list of different requests that people send to an AI assistant, one per line."
_LIST_MARK = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022])\s*")
_LABEL = re.compile(r"^(?:new\s+)?(?:request|task|question|instruction|prompt)\s*\d*\s*[:.)-]\s*", re.IGNORECASE)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019*"
_STOP = frozenset("""
    about above after again also always another answer around because been before being below between both
    could does doing down during each explain from have having here into just like more most much only other
    over same should some such than that their them then there these they this those through under until very
    what when where which while whom with would your yours write describe give list tell short story poem
    note friend child reasons blog post diary entry summarize know visitor people enjoy things please
    """.split())


# ---- seed pool and few-shot prompts -------------------------------------------------------------------------

def bare_request(record: dict) -> str:
    """A built-in task prompt without its instruction texts: what is left when each instruction's IFEval
    description (rebuilt from metadata) is taken off its end. Other prompts come back as they are."""
    text = record["prompt"]
    metadata = record.get("metadata") or {}
    ids, kwargs = metadata.get("instruction_id_list"), metadata.get("kwargs")
    if not isinstance(ids, list) or not isinstance(kwargs, list) or len(ids) != len(kwargs):
        return text
    from selftrain.tasks.instructions import description

    for instruction_id, kw in reversed(list(zip(ids, kwargs))):
        try:
            described = description(instruction_id, kw)
        except Exception:  # an instruction of another source whose text is not ours to rebuild
            return record["prompt"]
        if not text.endswith(described):
            return record["prompt"]
        text = text[: -len(described)].rstrip()
    return text or record["prompt"]


def read_seed_file(path: str) -> list[dict]:
    """{id, request} per line of a seed prompts JSONL; every line checked before anything is written."""
    from selftrain.records import iter_jsonl

    pool = []
    for lineno, obj in iter_jsonl(path):  # a missing file or a bad line is an InputError naming it
        prompt = obj.get("prompt")
        if prompt is None:
            raise InputError(f"{path}:{lineno}: prompt: missing (each line of a self-instruct seed file "
                             f"needs a non-empty 'prompt')")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"{path}:{lineno}: prompt: expected a non-empty string, got {prompt!r}")
        pool.append({"id": str(obj.get("id", f"seed-{lineno:06d}")), "request": " ".join(prompt.split())})
    if not pool:
        raise InputError(f"{path}: file is empty (no prompts to show as examples)")
    return pool


def seed_pool(config) -> list[dict]:
    """The seed requests the shots are drawn from: `self_instruct_file`, or the task's IFT split."""
    sr = config.self_rewarding
    if sr.self_instruct_file:
        return read_seed_file(sr.self_instruct_file)
    if config.task.name != "ifeval":
        raise InputError(f"config: self_rewarding.self_instruct_file: needed: the built-in seed prompts are the "
                         f"ifeval task's IFT split (task.name is {config.task.name!r})")
    if sr.ift_prompts < 1:
        raise InputError("config: self_rewarding.self_instruct_file: needed: the built-in seed prompts are the "
                         "IFT split, and self_rewarding.ift_prompts is 0")
    from selftrain.data import load_task_split

    return [{"id": r["id"], "request": " ".join(bare_request(r).split())} for r in load_task_split(config, "ift")]


def check_shots(pool: list[dict], shots: int) -> None:
    if shots > len(pool):
        raise InputError(f"config: self_rewarding.self_instruct_shots: {shots} examples per request, but the "
                         f"seed pool holds {len(pool)} prompts")


def choose_shots(pool: list[dict], shots: int, seed: int, iteration: int, index: int) -> list[dict]:
    """Request `index`'s examples: a seeded draw without repeats (the same whatever else is asked)."""
    check_shots(pool, shots)
    return random.Random(f"{seed}:self_instruct:{iteration}:{index}").sample(pool, shots)


def numbered_list(shots: list[dict]) -> str:
    """The shots as items 1..k, then the number of the item the model is to write."""
    lines = "".join(f"{i}. {shot['request']}\n" for i, shot in enumerate(shots, 1))
    return f"{lines}{len(shots) + 1}."


def fewshot_prompt(tokenizer, shots: list[dict], spec) -> tuple[str, list[dict]]:
    """(prompt_text, messages) of one request. The text is the model's reply already begun: the user asks
    for a list (ASK) and the assistant's turn opens with the shots, ending in "k+1."; the model continues
    the list (a 135M model continues its own list far more often than it answers a request to write one:
    15 of 24 requests kept against 4 of 24 with the list in the user turn, smollm2-135m, T 0.7). Chat APIs
    cannot be handed a begun reply: their messages put the list in the user turn."""
    from selftrain.prompts import build_messages, render_prompt

    opening = render_prompt(tokenizer, {"prompt": ASK}, spec)
    text = opening + ("" if spec.use_chat_template else " ") + numbered_list(shots)
    return text, build_messages({"prompt": f"{ASK}\n\n{numbered_list(shots)}"}, spec)


# ---- the reply: extraction and usability -------------------------------------------------------------------

def extract_request(response: str, finish_reason: str) -> tuple[str, bool]:
    """(the request, whether it ended): the reply's first non-blank line, without a list number, a
    "Request:" label or wrapping quotes. It ended when a line break follows it or the reply stopped."""
    text = response.lstrip()
    line, newline, _ = text.partition("\n")
    ended = bool(newline) or finish_reason != "length"
    line = _LIST_MARK.sub("", line, count=1).strip(_QUOTES + " ")
    line = _LABEL.sub("", line, count=1)
    line = " ".join(line.split()).strip(_QUOTES + " ")
    return line, ended


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens: what ROUGE-L compares (rouge_score's default tokenizer)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def looks_like_request(text: str) -> bool:
    if not text[:1].isalpha() or not text[:1].isascii():
        return False
    if text.rstrip().endswith("?") or re.search(r"\b(can|could|would) you\b|\bplease\b", text, re.IGNORECASE):
        return True
    sentences = re.split(r"(?<=[.!?])\s+", text)
    return any(s.split()[0].strip(",:;").lower() in REQUEST_WORDS for s in sentences if s.split())


def usability_problem(text: str, ended: bool) -> str | None:
    """The first usability check the request fails (a `REASONS` name), or None."""
    if not text:
        return "empty"
    if not ended:
        return "cut_off"
    count = len(text.split())
    if count < MIN_WORDS:
        return "too_short"
    if count > MAX_WORDS:
        return "too_long"
    if NOT_TEXT.search(text):
        return "not_text"
    if not looks_like_request(text):
        return "not_a_request"
    return None


# ---- near-duplicates ---------------------------------------------------------------------------------------

def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (one DP row)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b, 1):
            above = row[j]
            row[j] = diagonal + 1 if x == y else max(row[j], row[j - 1])
            diagonal = above
    return row[-1]


def rouge_l(a: list[str], b: list[str]) -> float:
    """ROUGE-L F1 of two token lists: 2 * LCS / (len(a) + len(b)) (precision and recall weighted equally)."""
    if not a or not b:
        return 0.0
    return 2 * lcs_length(a, b) / (len(a) + len(b))


class NearDuplicates:
    """Texts to compare new ones against. `closest(tokens)` -> (similarity, label) of the most similar text
    above `limit`, or None. The word index gives each text's shared-token count (with multiplicity), an
    upper bound of the LCS: only texts whose bound exceeds the limit get the exact ROUGE-L."""

    def __init__(self, limit: float = SIMILARITY_LIMIT):
        self.limit = limit
        self.entries: list[tuple[list[str], str]] = []
        self.index: dict[str, list[tuple[int, int]]] = defaultdict(list)

    def add(self, tokens: list[str], label: str) -> None:
        n = len(self.entries)
        self.entries.append((tokens, label))
        for word, count in Counter(tokens).items():
            self.index[word].append((n, count))

    def closest(self, tokens: list[str]) -> tuple[float, str] | None:
        overlap: dict[int, int] = defaultdict(int)
        for word, count in Counter(tokens).items():
            for n, theirs in self.index.get(word, ()):
                overlap[n] += min(count, theirs)
        best = None
        for n, shared in overlap.items():
            other, label = self.entries[n]
            if 2 * shared / (len(tokens) + len(other)) <= self.limit:
                continue
            score = rouge_l(tokens, other)
            if score > self.limit and (best is None or score > best[0]):
                best = (score, label)
        return best


# ---- instructions and the whole filter ---------------------------------------------------------------------

def content_words(text: str) -> tuple[str, ...]:
    """The request's own words a keyword instruction may ask for: 4+ letters, not a function or task word."""
    seen = dict.fromkeys(w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4 and w not in _STOP)
    return tuple(seen)


def attach_instructions(request: str, first: str, rng: random.Random) -> dict:
    """The prompt (the request, then 1-2 IFEval instruction texts) and its metadata, drawn by the ifeval
    task's generator (selftrain.tasks.instructions.make_prompt's rules, on a model-written request)."""
    from selftrain.tasks.instructions import OTHER_WORDS, TYPES, conflicts, description, draw_kwargs

    related = content_words(request) or OTHER_WORDS
    # the request stands for the generator's topic: a forbidden word is never one of its words
    chosen = [(first, draw_kwargs(rng, first, request, related, []))]
    if rng.random() < 0.5:
        second = rng.choice([t for t in TYPES if not conflicts(first, t)])
        chosen.append((second, draw_kwargs(rng, second, request, related, chosen)))
    text = request
    for instruction_id, kwargs in chosen:
        text += ("\n" if "\n" in text else " ") + description(instruction_id, kwargs)
    return {"prompt": text, "metadata": {"instruction_id_list": [i for i, _ in chosen],
                                         "kwargs": [k for _, k in chosen], "category": first.split(":")[0]}}


def normalized(text: str) -> str:
    return " ".join(text.lower().split())


def filter_requests(written: list[dict], pool: list[dict], *, seed: int, iteration: int, attach: bool,
                    held_out: set[str] = frozenset(), limit: float = SIMILARITY_LIMIT) -> tuple[list[dict], dict]:
    """(kept prompt records, metrics). `written` are the generation records in canonical order, each with
    `id`, `shots` (the requests its prompt showed), `shot_ids`, `response`, `finish_reason`; `pool` the seed requests. Every record is kept or
    dropped for exactly one reason: len(written) = kept + sum(dropped)."""
    from selftrain.tasks.instructions import TYPES

    seeds = NearDuplicates(limit)
    for shot in pool:
        seeds.add(words(shot["request"]), shot["id"])
    kept_so_far = NearDuplicates(limit)
    dropped = {reason: 0 for reason in REASONS}
    examples: dict[str, list[str]] = {}
    kept, first_types = [], Counter()
    for record in written:
        text, ended = extract_request(record["response"], record.get("finish_reason", "stop"))
        reason, tokens, prompt = usability_problem(text, ended), words(text), None
        if reason is None:
            shots = NearDuplicates(limit)
            for shot in record["shots"]:
                shots.add(words(shot), shot)
            if shots.closest(tokens):
                reason = "copy_of_shot"
            elif seeds.closest(tokens):
                reason = "duplicate_of_seed"
            elif kept_so_far.closest(tokens):
                reason = "duplicate"
        if reason is None:
            prompt = {"prompt": text, "metadata": {}}
            if attach:
                first = TYPES[len(kept) % len(TYPES)]
                prompt = attach_instructions(text, first, random.Random(f"{seed}:self_instruct:attach:"
                                                                        f"{iteration}:{record['id']}"))
            if normalized(prompt["prompt"]) in held_out:
                reason = "held_out"
        if reason is not None:
            dropped[reason] += 1
            if len(examples.setdefault(reason, [])) < 3:
                examples[reason].append(record["response"][:160])
            continue
        kept_so_far.add(tokens, record["id"])
        metadata = {**prompt["metadata"], "request": text, "shot_ids": list(record["shot_ids"]),
                    "source": "self_instruct", "iteration": iteration}
        kept.append({"id": record["id"], "prompt": prompt["prompt"], "dataset": "self_instruct",
                     "metadata": metadata})
        if attach:
            first_types[metadata["instruction_id_list"][0]] += 1
    metrics = {"kept": len(kept), "dropped": dropped,
               "dropped_total": sum(dropped.values()), "similarity": {"measure": "rouge_l_f1", "limit": limit},
               "seed_prompts": len(pool), "dropped_examples": examples}
    if attach:
        metrics["first_instruction_types"] = dict(sorted(first_types.items()))
    return kept, metrics


def written_prompts(config, run_dir, iteration: int) -> list[dict] | None:
    """Iteration t's prompts as M_{t-1} wrote them (the finished self_instruct stage of a run), or None
    where the iteration takes the pool's window: self_instruct off, t < 2, or no run folder (by hand, give
    the stage's output as a dataset)."""
    if not (config.method == "self_rewarding" and config.self_rewarding.self_instruct and iteration >= 2 and run_dir):
        return None
    from selftrain.data import read_prompt_file, required_metadata
    from selftrain.runs import finished_output

    path = finished_output(run_dir, iteration, "self_instruct")  # missing: "run the 'self_instruct' stage first"
    return read_prompt_file(path, required=required_metadata(config))
