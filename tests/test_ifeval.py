"""IFEval: lm-eval's checkers imported offline, the ifeval reward, IFEval's file schema, and the seeded
instruction generator (determinism, disjoint splits, no conflicting pair, every pair satisfiable)."""
import json
import os
import random
import subprocess
import sys
import textwrap
from collections import Counter
from itertools import combinations
from pathlib import Path

import pytest

from selftrain import ifeval_checks
from selftrain.config import Config, RewardConfig
from selftrain.data import read_prompt_file, required_metadata
from selftrain.errors import InputError
from selftrain.ifeval_checks import (PUNKT_INSTRUCTIONS, check_response, checkers, ifeval_accuracies,
                                     validate_instructions)
from selftrain.rewards import get_reward
from selftrain.rewards.ifeval import IFEvalReward
from selftrain.tasks import instructions as gen
from selftrain.tasks.ifeval_format import convert_ifeval_record, is_ifeval_record

REPO = Path(__file__).resolve().parents[1]

# Valid explicit kwargs for every instruction lm-eval registers.
SAMPLE_KWARGS = {
    "keywords:existence": {"keywords": ["owls"]},
    "keywords:frequency": {"keyword": "owls", "frequency": 1, "relation": "at least"},
    "keywords:forbidden_words": {"forbidden_words": ["cats"]},
    "keywords:letter_frequency": {"letter": "o", "let_frequency": 1, "let_relation": "at least"},
    "language:response_language": {"language": "en"},
    "length_constraints:number_sentences": {"num_sentences": 3, "relation": "less than"},
    "length_constraints:number_paragraphs": {"num_paragraphs": 2},
    "length_constraints:number_words": {"num_words": 40, "relation": "less than"},
    "length_constraints:nth_paragraph_first_word": {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "owls"},
    "detectable_content:number_placeholders": {"num_placeholders": 1},
    "detectable_content:postscript": {"postscript_marker": "P.S."},
    "detectable_format:number_bullet_lists": {"num_bullets": 2},
    "detectable_format:constrained_response": {},
    "detectable_format:number_highlighted_sections": {"num_highlights": 1},
    "detectable_format:multiple_sections": {"section_spliter": "Section", "num_sections": 2},
    "detectable_format:json_format": {},
    "detectable_format:title": {},
    "combination:two_responses": {},
    "combination:repeat_prompt": {"prompt_to_repeat": "Describe owls."},
    "startend:end_checker": {"end_phrase": "That is all."},
    "change_case:capital_word_frequency": {"capital_frequency": 1, "capital_relation": "at least"},
    "change_case:english_capital": {},
    "change_case:english_lowercase": {},
    "punctuation:no_comma": {},
    "startend:quotation": {},
}


def reward() -> IFEvalReward:
    return get_reward(Config(reward_config=RewardConfig(rule_type="ifeval")))


def record(response, ids, kwargs, id="r1"):
    return {"id": id, "prompt_id": "p1", "prompt": "Describe owls.", "response": response,
            "metadata": {"instruction_id_list": ids, "kwargs": kwargs}}


# --- the reward on IFEval's semantics ------------------------------------------------------------------

LOWER, NO_COMMA, BULLETS, END, TITLE = (gen.LOWER, gen.NO_COMMA, gen.BULLETS, gen.END, gen.TITLE)


@pytest.mark.parametrize("ids, kwargs, response, strict, loose", [
    ([LOWER], [{}], "owls hunt at night and sleep during the day in quiet old trees.", [True], [True]),
    ([LOWER], [{}], "Owls hunt at night and sleep during the day in quiet old trees.", [False], [False]),
    # a preamble line fails strict; loose also tries the reply without its first line
    ([LOWER], [{}], "Sure, here it is:\nowls hunt at night and sleep during the day in old trees.", [False], [True]),
    ([NO_COMMA], [{}], "Hello, world", [False], [False]),
    ([NO_COMMA], [{}], "Hello world", [True], [True]),
    ([BULLETS], [{"num_bullets": 3}], "Owls:\n* they hunt\n* they fly\n* they hoot", [True], [True]),
    ([BULLETS], [{"num_bullets": 4}], "Owls:\n* they hunt\n* they fly\n* they hoot", [False], [False]),
    ([BULLETS], [{"num_bullets": 2}], "- they hunt\n- they fly", [True], [True]),
    ([END], [{"end_phrase": "That is all."}], "Owls hunt at night. That is all.", [True], [True]),
    ([END], [{"end_phrase": "That is all."}], "Owls hunt at night. That is all.\nBye!", [False], [True]),
    ([TITLE], [{}], "<<Night Hunters>>\nOwls hunt at night.", [True], [True]),
    ([TITLE], [{}], "Night Hunters\nOwls hunt at night.", [False], [False]),
    (["length_constraints:number_words"], [{"num_words": 5, "relation": "less than"}], "one two three four",
     [True], [True]),
    (["length_constraints:number_words"], [{"num_words": 5, "relation": "less than"}], "one two three four five",
     [False], [False]),
    (["keywords:existence"], [{"keywords": ["river"]}], "The River is wide.", [True], [True]),
    (["keywords:forbidden_words"], [{"forbidden_words": ["very"]}], "Owls are very quiet.", [False], [False]),
    (["keywords:forbidden_words"], [{"forbidden_words": ["very"]}], "Owls are everywhere.", [True], [True]),
    (["detectable_content:postscript"], [{"postscript_marker": "P.S."}], "Owls fly.\nP.S. I like them.",
     [True], [True]),
    (["startend:quotation"], [{}], '"Owls fly."', [True], [True]),
    (["startend:quotation"], [{}], 'Owls fly.', [False], [False]),
    (["detectable_format:number_highlighted_sections"], [{"num_highlights": 2}], "Owls *hunt* and *fly*.",
     [True], [True]),
    (["detectable_format:number_highlighted_sections"], [{"num_highlights": 1}], "Owls hunt.", [False], [False]),
    # IFEval's Hub rows carry every key with None: dropped, as lm-eval does
    ([NO_COMMA, TITLE], [{"num_bullets": None}, {"keywords": None}], "<<Owls>>\nOwls fly, hunt.", [False, True],
     [True, True]),
])
def test_reward_follows_lm_eval_semantics(ids, kwargs, response, strict, loose):
    (result,) = reward().score([record(response, ids, kwargs)])
    assert result["ifeval_strict"] == strict and result["ifeval_loose"] == loose
    assert result["reward_score"] == sum(strict) / len(strict)
    assert result["is_correct"] is all(strict)
    assert result["answer_found"] is True and result["instruction_id_list"] == ids


def test_reward_partial_credit_and_empty_reply():
    r = reward()
    half, empty = r.score([record("<<Owls>>\nOwls fly, hunt.", [NO_COMMA, TITLE], [{}, {}]),
                           record("  ", [NO_COMMA, TITLE], [{}, {}], id="r2")])
    assert (half["reward_score"], half["is_correct"]) == (0.5, False)
    assert empty == {"reward_score": 0.0, "is_correct": False, "answer_found": False, "ifeval_strict": [False, False],
                     "ifeval_loose": [False, False], "instruction_id_list": [NO_COMMA, TITLE]}
    assert IFEvalReward.verifiable and isinstance(r, IFEvalReward)


@pytest.mark.parametrize("metadata, message", [
    ({}, "metadata.instruction_id_list: missing"),
    ({"instruction_id_list": [NO_COMMA]}, "metadata.kwargs: missing"),
    ({"instruction_id_list": [NO_COMMA], "kwargs": [{}, {}]}, "metadata.kwargs: 2 entries for 1 instructions"),
    ({"instruction_id_list": ["punctuation:no_commas"], "kwargs": [{}]},
     "metadata.instruction_id_list[0]: unknown IFEval instruction id 'punctuation:no_commas' "
     "(did you mean 'punctuation:no_comma'?)"),
    ({"instruction_id_list": [TITLE], "kwargs": [{"num_bullets": 3}]},
     "metadata.kwargs[0]: 'num_bullets' is not a parameter of detectable_format:title (it takes none)"),
    ({"instruction_id_list": [BULLETS], "kwargs": [{"num_bullets": "3"}]},
     "metadata.kwargs[0].num_bullets: expected an integer, got '3'"),
    ({"instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": "river"}]},
     "metadata.kwargs[0].keywords: expected a list of words, got 'river'"),
    # lm-eval would draw the missing relation (and IFEval's letter '#') from the global random
    ({"instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": 40}]},
     "would get a random parameter from lm-eval"),
    ({"instruction_id_list": ["keywords:letter_frequency"],
      "kwargs": [{"letter": "#", "let_frequency": 4, "let_relation": "at least"}]},
     "would get a random parameter from lm-eval"),
    ({"instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": 4, "relation": "most"}]},
     "metadata.kwargs[0]: length_constraints:number_words refuses"),
])
def test_check_record_names_what_is_wrong(metadata, message):
    bad = {"id": "r1", "prompt_id": "p1", "response": "x", "metadata": metadata}
    assert message in IFEvalReward.check_record(bad)
    with pytest.raises(InputError, match="record r1: "):
        reward().score([bad])


def test_validation_leaves_the_global_random_stream_alone():
    random.seed(5)
    expected = random.random()
    random.seed(5)
    validate_instructions(["length_constraints:number_words"], [{"num_words": 40}])  # lm-eval draws here
    assert random.random() == expected


def test_every_registered_instruction_validates_and_is_described():
    assert set(SAMPLE_KWARGS) == set(ifeval_checks.instruction_ids())
    for instruction_id, kwargs in SAMPLE_KWARGS.items():
        assert validate_instructions([instruction_id], [kwargs]) is None, instruction_id
        assert instruction_id in gen._PHRASES, instruction_id


def test_punkt_instructions_are_exactly_the_ones_that_need_punkt_data():
    if checkers().punkt:
        pytest.skip("nltk's punkt_tab is installed here: nothing to show")
    needs = set()
    for instruction_id, kwargs in SAMPLE_KWARGS.items():
        checker = ifeval_checks.build(instruction_id, kwargs)
        try:
            checker.check_following("Owls hunt at night. They are QUIET birds.\n\nP.S. That is all.")
        except LookupError:
            needs.add(instruction_id)
    assert needs == PUNKT_INSTRUCTIONS
    with pytest.raises(InputError, match=r"number_sentences needs nltk's punkt_tab .*nltk.downloader punkt_tab"):
        check_response(["length_constraints:number_sentences"], [SAMPLE_KWARGS["length_constraints:number_sentences"]],
                       "", "One. Two.")


def test_ifeval_accuracies():
    rows = [{"ifeval_strict": [True, True], "ifeval_loose": [True, True]},
            {"ifeval_strict": [False, True], "ifeval_loose": [True, True]},
            {"ifeval_strict": [False], "ifeval_loose": [False]}]
    assert ifeval_accuracies(rows) == {"prompt_level_strict": 0.3333, "instruction_level_strict": 0.6,
                                       "prompt_level_loose": 0.6667, "instruction_level_loose": 0.8, "n": 3}
    assert ifeval_accuracies([])["prompt_level_strict"] is None
    with pytest.raises(InputError, match="ifeval_loose: missing"):
        ifeval_accuracies([{"id": "x", "ifeval_strict": [True]}])


# --- the offline import, in fresh processes ------------------------------------------------------------

PROBE = textwrap.dedent("""
    import json, socket, sys, time
    attempts = []
    def refuse(*args, **kwargs):
        attempts.append(repr(args)[:80])
        raise OSError("no network in this test")
    socket.socket.connect = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    start = time.time()
    from selftrain.ifeval_checks import check_response, checkers
    punkt = checkers().punkt
    seconds = time.time() - start
    import langdetect
    ambiguous = [langdetect.detect(t) for t in ("radio", "taxi hotel", "auto", "piano forte", "salut")]
    try:
        check_response(["length_constraints:number_sentences"], [{"num_sentences": 3, "relation": "less than"}],
                       "", "One. Two. Three.")
        error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"seconds": seconds, "punkt": punkt, "attempts": attempts, "error": error,
                      "ambiguous": ambiguous}))
""")


def probe(tmp_path, nltk_data: Path) -> tuple[dict, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "NLTK_DATA": str(nltk_data), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    *_, last = done.stdout.strip().splitlines()
    return json.loads(last), done.stdout + done.stderr


def test_offline_import_is_quiet_and_refuses_punkt_instructions(tmp_path):
    empty = tmp_path / "nltk_data"
    empty.mkdir()
    first, output = probe(tmp_path, empty)
    assert "Downloaded" not in output and "nltk_data" not in output, output
    assert first["attempts"] == [] and first["seconds"] < 15  # ~2-3 s; the margin is for a busy 2-core machine
    if first["punkt"]:
        pytest.skip("punkt_tab is installed outside NLTK_DATA (nltk's system paths)")
    assert first["error"].startswith("InputError: instruction_id_list[0]: length_constraints:number_sentences needs")
    assert "python -m nltk.downloader punkt_tab" in first["error"]
    # langdetect is seeded: a fresh process detects the same languages on ambiguous short texts
    second, _ = probe(tmp_path, empty)
    assert second["ambiguous"] == first["ambiguous"]


def test_punkt_data_present_makes_sentence_counts_checkable(tmp_path):
    model = tmp_path / "nltk_data" / "tokenizers" / "punkt_tab" / "english"
    model.mkdir(parents=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (model / name).write_text("")  # an untrained model: enough to load
    result, output = probe(tmp_path, tmp_path / "nltk_data")
    assert result["punkt"] is True and result["error"] is None and "Downloaded" not in output


# --- IFEval's file schema ------------------------------------------------------------------------------

def test_ifeval_lines_are_read_as_prompt_records(tmp_path):
    path = tmp_path / "ifeval.jsonl"
    rows = [{"key": 1000, "prompt": "Write a haiku about owls.", "instruction_id_list": [NO_COMMA, TITLE],
             "kwargs": [{"num_bullets": None}, {}]},
            {"prompt": "Describe owls.", "metadata": {"expected_answer": "x"}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = Config(reward_config=RewardConfig(rule_type="ifeval"))
    assert required_metadata(config) == ("instruction_id_list", "kwargs")
    first, = read_prompt_file(path, required=())[:1]
    assert first == {"id": "1000", "prompt": "Write a haiku about owls.",
                     "metadata": {"category": "punctuation", "instruction_id_list": [NO_COMMA, TITLE],
                                  "kwargs": [{}, {}]}}
    with pytest.raises(InputError, match=r"ifeval.jsonl:2: metadata.instruction_id_list: missing \(rule-based ifeval"):
        read_prompt_file(path, required=required_metadata(config))
    assert IFEvalReward.check_record({**first, "response": "x"}) is None


@pytest.mark.parametrize("row, message", [
    ({"key": 1, "prompt": "p", "kwargs": [{}]}, "instruction_id_list: missing"),
    ({"key": 1, "prompt": "p", "instruction_id_list": [NO_COMMA, TITLE], "kwargs": [{}]},
     "kwargs: 1 entries for 2 instructions"),
    ({"key": 1, "prompt": "p", "instruction_id_list": ["x:y"], "kwargs": [{}]},
     "instruction_id_list[0]: unknown IFEval instruction id 'x:y'"),
    ({"key": [1], "prompt": "p", "instruction_id_list": [NO_COMMA], "kwargs": [{}]}, "key: expected"),
])
def test_bad_ifeval_lines_name_file_line_and_field(tmp_path, row, message):
    path = tmp_path / "bad.jsonl"
    good = {"key": 0, "prompt": "p", "instruction_id_list": [NO_COMMA], "kwargs": [{}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(InputError) as exc:
        read_prompt_file(path)
    assert str(exc.value).startswith(f"{path}:2: {message}")


def test_is_ifeval_record():
    assert is_ifeval_record({"prompt": "p", "instruction_id_list": []})
    assert not is_ifeval_record({"prompt": "p", "metadata": {"instruction_id_list": []}})
    assert not is_ifeval_record({"question": "q", "answer": "#### 1"})
    assert convert_ifeval_record({"prompt": "p", "instruction_id_list": [NO_COMMA], "kwargs": [{}]}, 3)["metadata"][
        "instruction_id_list"] == [NO_COMMA]


# --- the generator -------------------------------------------------------------------------------------

SIZES = {"test": 300, "judge_eval": 100, "eft": 200, "ift": 400, "pool": 2000}


@pytest.fixture(scope="module")
def splits():
    return gen.generate_splits(SIZES, 0)


def all_records(splits):
    return [r for name in gen.SPLITS for r in splits[name]]


def test_generator_is_deterministic_and_seeded(splits):
    small = {"test": 50, "ift": 30}
    assert json.dumps(gen.generate_splits(small, 0)) == json.dumps(gen.generate_splits(small, 0))
    assert gen.generate_splits(small, 0)["test"] != gen.generate_splits(small, 1)["test"]
    assert list(splits) == list(gen.SPLITS) and [len(splits[n]) for n in gen.SPLITS] == list(SIZES.values())
    assert splits["test"][0]["id"] == "test-000000" and splits["pool"][-1]["id"] == "pool-001999"


def test_splits_never_share_a_prompt(splits):
    prompts = [r["prompt"] for r in all_records(splits)]
    assert len(set(prompts)) == len(prompts)


def test_a_later_split_never_changes_an_earlier_one(splits):
    resized = gen.generate_splits({**SIZES, "ift": 10, "pool": 5}, 0)
    for name in ("test", "judge_eval", "eft"):
        assert resized[name] == splits[name]
    assert resized["ift"] == splits["ift"][:10]
    assert gen.generate_splits({"test": 300}, 0)["test"] == splits["test"]


def test_no_conflicting_pair_and_every_kwargs_accepted(splits):
    table = checkers().registry.INSTRUCTION_CONFLICTS
    seen_pairs = set()
    for r in all_records(splits):
        ids, kwargs = r["metadata"]["instruction_id_list"], r["metadata"]["kwargs"]
        assert 1 <= len(ids) <= 2 and set(ids) <= set(gen.TYPES)
        if len(ids) == 2:
            a, b = ids
            assert a != b and b not in table.get(a, ()) and a not in table.get(b, ())
            assert frozenset(ids) not in gen.OWN_CONFLICTS
            seen_pairs.add(frozenset(ids))
        assert validate_instructions(ids, kwargs) is None, r
        assert r["metadata"]["category"] == ids[0].split(":")[0]
    assert {gen.LOWER, gen.CAPITAL} not in [set(p) for p in seen_pairs]
    assert len(seen_pairs) == len(allowed_pairs())  # a few thousand prompts reach every allowed pair


def test_parameters_fit_a_small_model(splits):
    first = Counter(r["metadata"]["instruction_id_list"][0] for r in splits["test"])
    assert set(first.values()) == {len(splits["test"]) // len(gen.TYPES)}  # round-robin: every type equally
    for r in all_records(splits):
        for instruction_id, kwargs in zip(r["metadata"]["instruction_id_list"], r["metadata"]["kwargs"]):
            if instruction_id == gen.WORDS:
                assert kwargs["relation"] == "less than" and 30 <= kwargs["num_words"] <= 50
            if instruction_id == gen.BULLETS:
                assert 2 <= kwargs["num_bullets"] <= 4
            if instruction_id == gen.HIGHLIGHTS:
                assert 1 <= kwargs["num_highlights"] <= 2
    topics = Counter(r["metadata"]["topic"] for r in splits["pool"])
    assert len(topics) == len(gen.TOPICS) >= 60


def test_exhausted_space_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(gen, "TOPICS", gen.TOPICS[:1])
    monkeypatch.setattr(gen, "SHAPES", gen.SHAPES[:1])
    monkeypatch.setattr(gen, "MAX_TRIES", 200)
    with pytest.raises(ValueError, match="the space of distinct prompts is exhausted"):
        gen.generate_splits({"test": 100, "pool": 100_000}, 0)


@pytest.mark.parametrize("sizes, message", [({"train": 3}, "unknown split 'train'"), ({"test": -1}, "non-negative")])
def test_bad_sizes(sizes, message):
    with pytest.raises(ValueError, match=message):
        gen.generate_splits(sizes, 0)


def test_cli_writes_identical_files(tmp_path, capsys):
    for out in ("a", "b"):
        gen.main(["--out", str(tmp_path / out), "--sizes", "test=12,ift=5", "--seed", "0"])
    written = [str(tmp_path / out / f"{split}.jsonl") for out in "ab" for split in ("test", "ift")]
    assert capsys.readouterr().out.splitlines() == written
    for split in ("test", "ift"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
    rows = [json.loads(line) for line in (tmp_path / "a" / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and rows == gen.generate_splits({"test": 12}, 0)["test"]
    with pytest.raises(SystemExit):
        gen.main(["--out", str(tmp_path), "--sizes", "test"])


@pytest.mark.parametrize("instruction_id, kwargs, phrase", [
    (gen.WORDS, {"num_words": 40, "relation": "less than"}, "at most 39 words"),
    (gen.WORDS, {"num_words": 40, "relation": "at least"}, "at least 40 words"),
    (gen.LOWER, {}, "all lowercase"),
    (gen.KEYWORD, {"keywords": ["river"]}, "include the word 'river'"),
    (gen.FORBIDDEN, {"forbidden_words": ["very", "good"]}, "do not use the words 'very' or 'good'"),
    (gen.END, {"end_phrase": "That is all."}, "end with 'That is all.'"),
    (gen.BULLETS, {"num_bullets": 3}, "exactly 3 bullet points"),
    (gen.NO_COMMA, {}, "no commas"),
    (gen.TITLE, {}, "a title in << >>"),
    (gen.HIGHLIGHTS, {"num_highlights": 1}, "at least 1 highlighted section (*like this*)"),
])
def test_describe(instruction_id, kwargs, phrase):
    assert gen.describe(instruction_id, kwargs) == phrase


# --- every pair the generator can emit can be satisfied -------------------------------------------------

def compose(topic: str, spec: list[tuple[str, dict]]) -> str:
    """A reply that follows every instruction of `spec` (a composer per instruction type)."""
    given = dict(spec)
    lines = []
    if gen.TITLE in given:
        lines.append(f"<<About {topic}>>")
    sentence = f"Here is what I think about {topic}."
    if gen.KEYWORD in given:
        sentence += f" It makes me think of {given[gen.KEYWORD]['keywords'][0]}."
    if gen.HIGHLIGHTS in given:
        sentence += " " + " ".join(["*Look closely*", "*Stay curious*"][:given[gen.HIGHLIGHTS]["num_highlights"]])
    lines.append(sentence)
    if gen.BULLETS in given:
        count = given[gen.BULLETS]["num_bullets"]
        lines += [f"* the {word} idea" for word in ("first", "second", "third", "fourth")][:count]
    if gen.POSTSCRIPT in given:
        lines.append(f"{given[gen.POSTSCRIPT]['postscript_marker']} Write back soon.")
    if gen.END in given:
        lines.append(given[gen.END]["end_phrase"])
    text = "\n".join(lines)
    if gen.LOWER in given:
        text = text.lower()
    if gen.CAPITAL in given:
        text = text.upper()
    if gen.QUOTATION in given:
        text = f'"{text}"'
    return text  # no commas, no common word, fewer than 30 words: punctuation, forbidden words, length


def allowed_pairs() -> list[tuple[str, str]]:
    return [(a, b) for a, b in combinations(gen.TYPES, 2) if not gen.conflicts(a, b)]


def assert_satisfied(topic, spec):
    ids, kwargs = [i for i, _ in spec], [k for _, k in spec]
    response = compose(topic, spec)
    assert check_response(ids, kwargs, "", response)["strict"] == [True] * len(ids), (ids, kwargs, response)


def test_every_allowed_pair_can_be_satisfied():
    rng = random.Random(0)
    for a, b in allowed_pairs():
        for order in ((a, b), (b, a)):
            for _ in range(4):
                topic, related = rng.choice(gen.TOPICS)
                spec = []
                for instruction_id in order:
                    spec.append((instruction_id, gen.draw_kwargs(rng, instruction_id, topic, related, spec)))
                assert_satisfied(topic, spec)


def test_generated_records_can_be_satisfied(splits):
    for r in splits["test"]:
        m = r["metadata"]
        assert_satisfied(m["topic"], list(zip(m["instruction_id_list"], m["kwargs"])))


def test_conflict_table():
    assert gen.conflicts(gen.LOWER, gen.CAPITAL) and gen.conflicts(gen.CAPITAL, gen.LOWER)
    assert gen.conflicts(gen.QUOTATION, gen.TITLE) and gen.conflicts(gen.TITLE, gen.QUOTATION)
    assert gen.conflicts(gen.LOWER, gen.END) and gen.conflicts(gen.BULLETS, gen.BULLETS)
    assert not gen.conflicts(gen.QUOTATION, gen.END) and not gen.conflicts(gen.QUOTATION, gen.BULLETS)
