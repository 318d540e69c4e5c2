"""Seeded instruction-following task: short requests on everyday topics with 1-2 IFEval instructions.

    python -m selftrain.tasks.instructions --out DIR --sizes test=200,ift=100,pool=1000 --seed 0

writes DIR/<split>.jsonl for each split named; the same seed gives byte-identical files.

A prompt is a task shape on a topic ("Explain owls to a child.") followed by the
text lm-eval's `build_description` writes for each instruction, so prompts read
like IFEval's and lm-eval's checkers (selftrain.ifeval_checks) score them:

    {"id": "test-000000", "prompt": "...",
     "metadata": {"instruction_id_list": [...], "kwargs": [...], "topic": "owls",
                  "category": "<family of the first instruction, e.g. length_constraints>"}}

Parameters are sized for a 135M model answering within ~100 tokens (fewer than
30-50 words, 2-4 bullets) and always given explicitly: lm-eval fills a missing
one from the global `random`, which this module never touches.

Splits (`SPLITS`, drawn in that order, each from its own seeded stream) never
share a prompt text, so the held-out `test` split is never trained on, and the
size of a later split never changes an earlier one. The first instruction of
a split's n-th record is `TYPES[n % len(TYPES)]`, so every type is equally
represented; the second (half of the records) is any type that does not
conflict with it (`conflicts`).
"""
from __future__ import annotations

import random
import re
from pathlib import Path

from selftrain.tasks import check_sizes, split_cli, write_splits

SPLITS = ("test", "judge_eval", "eft", "ift", "pool")
MAX_TRIES = 20_000  # draws in a row that only repeat earlier prompts before the space counts as exhausted

WORDS = "length_constraints:number_words"
LOWER = "change_case:english_lowercase"
CAPITAL = "change_case:english_capital"
KEYWORD = "keywords:existence"
FORBIDDEN = "keywords:forbidden_words"
END = "startend:end_checker"
BULLETS = "detectable_format:number_bullet_lists"
NO_COMMA = "punctuation:no_comma"
TITLE = "detectable_format:title"
POSTSCRIPT = "detectable_content:postscript"
QUOTATION = "startend:quotation"
HIGHLIGHTS = "detectable_format:number_highlighted_sections"
TYPES = (WORDS, LOWER, CAPITAL, KEYWORD, FORBIDDEN, END, BULLETS, NO_COMMA, TITLE, POSTSCRIPT, QUOTATION, HIGHLIGHTS)

# Pairs lm-eval's checkers could both pass but whose prompt texts ask for incompatible things: "all
# lowercase, no capital letters" or "all capital letters" next to "finish with this exact phrase That is
# all." or "a postscript starting with P.S." (the checkers ignore case there; the instructions do not).
OWN_CONFLICTS = frozenset({frozenset({LOWER, END}), frozenset({CAPITAL, END}), frozenset({LOWER, POSTSCRIPT})})

WORD_LIMITS = (30, 50)  # "less than N words": N drawn in this range
BULLET_COUNTS = (2, 4)
HIGHLIGHT_COUNTS = (1, 2)
END_PHRASES = ("That is all.", "Thank you for reading.", "Have a nice day.", "Any other questions?",
               "See you soon.", "I hope this helps.")
COMMON_WORDS = ("very", "really", "good", "nice", "great", "also", "just", "things", "many", "love", "best", "fun")
OTHER_WORDS = ("window", "music", "yellow", "bridge", "candle", "pocket", "mirror", "ladder", "violin", "pepper",
               "blanket", "compass", "whistle", "lantern", "button", "feather", "puzzle", "marble", "ribbon", "kettle")

SHAPES = (
    "Describe {topic}.",
    "Give advice about {topic}.",
    "Write a short note to a friend about {topic}.",
    "Explain {topic} to a child.",
    "List reasons to like {topic}.",
    "Write a short story about {topic}.",
    "Write a short poem about {topic}.",
    "Why do people enjoy {topic}?",
    "Write a short blog post about {topic}.",
    "What would you tell a visitor about {topic}?",
    "Write a diary entry about {topic}.",
    "Summarize what you know about {topic}.",
)

# (topic, two words that belong with it): "include the word ..." draws one of them or an unrelated word.
TOPICS = (
    ("owls", ("night", "feathers")), ("dolphins", ("ocean", "clever")), ("elephants", ("trunk", "herd")),
    ("honeybees", ("hive", "flowers")), ("penguins", ("ice", "swim")), ("horses", ("saddle", "gallop")),
    ("cats", ("whiskers", "purr")), ("dogs", ("leash", "loyal")), ("butterflies", ("wings", "garden")),
    ("turtles", ("shell", "slow")), ("rainy days", ("umbrella", "puddles")), ("snowstorms", ("cold", "shovel")),
    ("thunderstorms", ("lightning", "loud")), ("sunny mornings", ("breakfast", "light")),
    ("autumn leaves", ("orange", "wind")), ("spring flowers", ("bloom", "color")), ("summer holidays", ("beach", "rest")),
    ("winter evenings", ("fireplace", "cozy")), ("Paris", ("tower", "river")), ("Tokyo", ("trains", "crowds")),
    ("Rome", ("ruins", "fountains")), ("small villages", ("quiet", "neighbors")), ("city parks", ("benches", "trees")),
    ("mountain towns", ("peaks", "hiking")), ("gardening", ("soil", "seeds")), ("painting", ("brush", "canvas")),
    ("knitting", ("yarn", "needles")), ("chess", ("board", "strategy")), ("photography", ("camera", "photos")),
    ("fishing", ("lake", "patience")), ("cycling", ("helmet", "pedals")), ("hiking", ("trail", "boots")),
    ("swimming", ("pool", "breath")), ("baking", ("oven", "flour")), ("reading novels", ("chapters", "characters")),
    ("playing guitar", ("strings", "chords")), ("board games", ("dice", "friends")), ("camping", ("tent", "campfire")),
    ("fresh bread", ("crust", "warm")), ("pizza", ("cheese", "slice")), ("apples", ("orchard", "crunchy")),
    ("chocolate", ("sweet", "cocoa")), ("vegetable soup", ("carrots", "bowl")), ("green tea", ("leaves", "calm")),
    ("pancakes", ("syrup", "breakfast")), ("rice", ("grain", "fields")), ("strawberries", ("red", "summer")),
    ("cheese", ("milk", "aged")), ("firefighters", ("hose", "brave")), ("teachers", ("classroom", "lessons")),
    ("nurses", ("patients", "care")), ("farmers", ("harvest", "tractor")), ("pilots", ("airplane", "clouds")),
    ("chefs", ("kitchen", "recipes")), ("librarians", ("books", "shelves")), ("carpenters", ("wood", "tools")),
    ("astronauts", ("rocket", "space")), ("mail carriers", ("letters", "route")), ("trains", ("tracks", "station")),
    ("bicycles", ("wheels", "brakes")), ("sailboats", ("sails", "harbor")), ("hot air balloons", ("sky", "basket")),
    ("libraries", ("quiet", "books")), ("museums", ("paintings", "history")), ("zoos", ("animals", "keepers")),
    ("markets", ("stalls", "fruit")), ("birthdays", ("cake", "candles")), ("weddings", ("rings", "dance")),
    ("picnics", ("basket", "grass")), ("full moons", ("craters", "night")), ("stars", ("sky", "bright")),
    ("volcanoes", ("lava", "eruption")), ("rivers", ("water", "boats")), ("deserts", ("sand", "heat")),
    ("forests", ("trees", "moss")), ("rainbows", ("colors", "rain")), ("oceans", ("waves", "salt")),
    ("friendship", ("trust", "laughter")), ("kindness", ("smile", "help")), ("learning languages", ("words", "practice")),
    ("recycling", ("plastic", "bins")), ("sleep", ("dreams", "rest")),
)


def conflicts(a: str, b: str) -> bool:
    """Whether two instruction types may not appear together: lm-eval's INSTRUCTION_CONFLICTS
    (read both ways, as its `conflict_make` would) plus `OWN_CONFLICTS`; a type conflicts with itself."""
    from selftrain.ifeval_checks import checkers

    table = checkers().registry.INSTRUCTION_CONFLICTS
    return a == b or b in table.get(a, ()) or a in table.get(b, ()) or frozenset({a, b}) in OWN_CONFLICTS


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def draw_kwargs(rng: random.Random, instruction_id: str, topic: str, related: tuple[str, ...],
                others: list[tuple[str, dict]]) -> dict:
    """Explicit kwargs for one instruction, compatible with the record's other instructions: a keyword or
    end phrase never uses a forbidden word, and a forbidden word is never the topic, a keyword or in the
    end phrase."""
    banned = {w for i, k in others if i == FORBIDDEN for w in k["forbidden_words"]}
    needed = _words(topic) | {w for i, k in others if i == KEYWORD for w in _words(" ".join(k["keywords"]))}
    needed |= {w for i, k in others if i == END for w in _words(k["end_phrase"])}
    if instruction_id == WORDS:
        return {"num_words": rng.randint(*WORD_LIMITS), "relation": "less than"}
    if instruction_id == KEYWORD:
        pool = related if rng.random() < 0.5 else OTHER_WORDS
        return {"keywords": [rng.choice([w for w in pool if w not in banned])]}
    if instruction_id == FORBIDDEN:
        allowed = [w for w in COMMON_WORDS if w not in needed]
        return {"forbidden_words": sorted(rng.sample(allowed, rng.randint(1, 2)))}
    if instruction_id == END:
        return {"end_phrase": rng.choice([p for p in END_PHRASES if not _words(p) & banned])}
    if instruction_id == BULLETS:
        return {"num_bullets": rng.randint(*BULLET_COUNTS)}
    if instruction_id == POSTSCRIPT:
        return {"postscript_marker": "P.S."}
    if instruction_id == HIGHLIGHTS:
        return {"num_highlights": rng.randint(*HIGHLIGHT_COUNTS)}
    if instruction_id in TYPES:
        return {}
    raise ValueError(f"unknown instruction type {instruction_id!r}; the generator emits {', '.join(TYPES)}")


def description(instruction_id: str, kwargs: dict) -> str:
    """The instruction's text as lm-eval writes it (IFEval's wording), from explicit kwargs."""
    from selftrain.ifeval_checks import checkers

    return checkers().registry.INSTRUCTION_DICT[instruction_id](instruction_id).build_description(**kwargs)


def make_prompt(rng: random.Random, first: str) -> dict:
    """One record (without id) whose first instruction is of type `first`."""
    topic, related = rng.choice(TOPICS)
    shape = rng.choice(SHAPES)
    chosen = [(first, draw_kwargs(rng, first, topic, related, []))]
    if rng.random() < 0.5:
        second = rng.choice([t for t in TYPES if not conflicts(first, t)])
        chosen.append((second, draw_kwargs(rng, second, topic, related, chosen)))
    text = shape.format(topic=topic)
    for instruction_id, kwargs in chosen:
        # a description that ends in an example list ("* This is point 2") gets the next one on a new line
        text += ("\n" if "\n" in text else " ") + description(instruction_id, kwargs)
    return {
        "prompt": text,
        "metadata": {"instruction_id_list": [i for i, _ in chosen], "kwargs": [k for _, k in chosen],
                     "topic": topic, "category": first.split(":")[0]},
    }


def generate_splits(sizes: dict[str, int], seed: int) -> dict[str, list[dict]]:
    """Records per split (every name of `SPLITS`, empty when not asked for); no prompt text in two splits."""
    check_sizes(sizes, SPLITS)
    seen: set[str] = set()
    splits = {}
    for name in SPLITS:
        rng = random.Random(f"selftrain-instructions:{seed}:{name}")  # a stream per split: sizes do not leak
        splits[name] = [{"id": f"{name}-{i:06d}", **_fresh_prompt(rng, TYPES[i % len(TYPES)], seen, name)}
                        for i in range(sizes.get(name, 0))]
    return splits


def _fresh_prompt(rng: random.Random, first: str, seen: set[str], split: str) -> dict:
    for _ in range(MAX_TRIES):
        record = make_prompt(rng, first)
        if record["prompt"] not in seen:
            seen.add(record["prompt"])
            return record
    raise ValueError(f"split {split}: no new prompt with a {first} instruction in {MAX_TRIES} draws: the space "
                     f"of distinct prompts is exhausted ({len(seen)} drawn so far); ask for fewer prompts")


def describe(instruction_id: str, kwargs: dict) -> str:
    """A short human phrase for an instruction, for a justification: "at most 39 words", "no commas"."""
    from selftrain.ifeval_checks import clean_kwargs

    k = clean_kwargs(kwargs or {})
    phrase = _PHRASES.get(instruction_id)
    if phrase is None:
        return instruction_id.split(":")[-1].replace("_", " ")
    return phrase(k)


def _quoted(words) -> str:
    words = [f"'{w}'" for w in words]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _count(k: dict, key: str, relation_key: str, noun: str) -> str:
    """lm-eval's "less than N" is at most N-1; "at least N" stays."""
    n, relation = k.get(key), k.get(relation_key)
    if relation == "less than" and isinstance(n, int):
        return f"at most {n - 1} {noun}"
    return f"at least {n} {noun}" if relation == "at least" else f"{relation} {n} {noun}"


_PHRASES = {
    WORDS: lambda k: _count(k, "num_words", "relation", "words"),
    "length_constraints:number_sentences": lambda k: _count(k, "num_sentences", "relation", "sentences"),
    "length_constraints:number_paragraphs": lambda k: f"exactly {k.get('num_paragraphs')} paragraphs separated by ***",
    "length_constraints:nth_paragraph_first_word": lambda k: (
        f"{k.get('num_paragraphs')} paragraphs, paragraph {k.get('nth_paragraph')} starting with "
        f"'{k.get('first_word')}'"),
    LOWER: lambda k: "all lowercase",
    CAPITAL: lambda k: "all capital letters",
    "change_case:capital_word_frequency": lambda k: _count(k, "capital_frequency", "capital_relation",
                                                           "words in all capitals"),
    KEYWORD: lambda k: f"include the word{'s' if len(k.get('keywords', [])) > 1 else ''} "
                       f"{_quoted(k.get('keywords', []))}",
    FORBIDDEN: lambda k: f"do not use the word{'s' if len(k.get('forbidden_words', [])) > 1 else ''} "
                         f"{_quoted(k.get('forbidden_words', [])).replace(' and ', ' or ')}",
    "keywords:frequency": lambda k: (f"the word '{k.get('keyword')}' "
                                     f"{_count(k, 'frequency', 'relation', 'times')}"),
    "keywords:letter_frequency": lambda k: (f"the letter '{k.get('letter')}' "
                                            f"{_count(k, 'let_frequency', 'let_relation', 'times')}"),
    END: lambda k: f"end with '{k.get('end_phrase')}'",
    BULLETS: lambda k: f"exactly {k.get('num_bullets')} bullet points",
    NO_COMMA: lambda k: "no commas",
    TITLE: lambda k: "a title in << >>",
    POSTSCRIPT: lambda k: f"a postscript starting with '{k.get('postscript_marker')}'",
    QUOTATION: lambda k: "wrapped in double quotes",
    HIGHLIGHTS: lambda k: f"at least {k.get('num_highlights')} highlighted section"
                          f"{'s' if k.get('num_highlights') != 1 else ''} (*like this*)",
    "detectable_format:json_format": lambda k: "all in JSON",
    "detectable_format:multiple_sections": lambda k: (f"{k.get('num_sections')} sections marked "
                                                      f"'{k.get('section_spliter')} X'"),
    "detectable_format:constrained_response": lambda k: "one of 'My answer is yes/no/maybe.'",
    "detectable_content:number_placeholders": lambda k: (f"at least {k.get('num_placeholders')} placeholders "
                                                         f"in [brackets]"),
    "language:response_language": lambda k: f"entirely in the language '{k.get('language')}'",
    "combination:two_responses": lambda k: "two responses separated by ******",
    "combination:repeat_prompt": lambda k: "the request repeated word for word first",
}


def write_task(out_dir: Path, sizes: dict[str, int], seed: int) -> list[Path]:
    """Write out_dir/<split>.jsonl for each split in `sizes`, atomically; return the paths."""
    return write_splits(out_dir, generate_splits(sizes, seed), sizes, SPLITS)


def main(argv=None) -> None:
    split_cli(argv, "python -m selftrain.tasks.instructions", __doc__, "test=200,pool=1000", SPLITS, write_task)


if __name__ == "__main__":
    main()
