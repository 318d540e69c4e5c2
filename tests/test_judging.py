"""The judge prompt, score parsing on realistic judge outputs, pairing rules and judge accuracy."""
from __future__ import annotations

import math
import random
from itertools import combinations

import pytest

from selftrain.errors import InputError
from selftrain.judging import (
    DEFAULT_JUDGE_TEMPLATE, NO_SCORE, ParsedScore, aggregate, average_ranks, build_pair, build_pairs, check_template,
    judge_agreement, kendall_tau_b, length_stats, load_template, pair_precision, pair_precision_chance, parse_score,
    render_judge_prompt, score_histogram, spearman,
)

# --- the judge prompt ----------------------------------------------------------------------------


def test_default_template_is_the_papers_rubric():
    t = DEFAULT_JUDGE_TEMPLATE
    for phrase in ("using the additive 5-point scoring system", "- Add 1 point if", "- Add another point if",
                   "- Award a third point if", "- Grant a fourth point if", "- Bestow a fifth point",
                   "User: {prompt}", "<response>{response}</response>",
                   "After examining the user's instruction and the response:\n"
                   "- Briefly justify your total score, up to 100 words.\n"
                   "- Conclude with the score using the format: \"Score: <total points>\"\n"
                   "Remember to assess from the AI Assistant perspective"):
        assert phrase in t, phrase
    assert t.endswith("we'll systematically attribute points based on the outlined criteria.")
    check_template(t, "default")


def test_render_fills_braces_safely_in_one_pass():
    text = render_judge_prompt(DEFAULT_JUDGE_TEMPLATE, "Write {a} dict, not {response}", 'x = {"k": 1}')
    assert "User: Write {a} dict, not {response}\n" in text  # the prompt's own "{response}" stays
    assert '<response>x = {"k": 1}</response>' in text
    assert "{prompt}" not in text


@pytest.mark.parametrize("text, missing", [("User: {prompt}", "{response}"), ("<r>{response}</r>", "{prompt}"),
                                           ("{ prompt } {response}", "{prompt}")])
def test_check_template_names_the_missing_placeholder(text, missing):
    with pytest.raises(InputError, match=rf"^cfg.yaml:judge_template: judge template: no \{missing}"):
        check_template(text, "cfg.yaml:judge_template")


def test_load_template(tmp_path):
    assert load_template("") == DEFAULT_JUDGE_TEMPLATE
    assert load_template(None) == DEFAULT_JUDGE_TEMPLATE
    good = tmp_path / "judge.txt"
    good.write_text("Q: {prompt}\nA: {response}\nScore 0-5.", encoding="utf-8")
    assert load_template(good) == "Q: {prompt}\nA: {response}\nScore 0-5."
    with pytest.raises(InputError, match="nope.txt: judge template file not found"):
        load_template(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("Q: {prompt}")
    with pytest.raises(InputError, match=r"bad.txt: judge template: no \{response\} placeholder"):
        load_template(str(bad))


# --- parsing -------------------------------------------------------------------------------------

QUOTING = """The response restates the user's request and then writes "Score: 5" in the middle of its \
own text, as if grading itself, which is irrelevant. It gives a partial recipe but skips the baking time.
It earns a point for relevance and one for addressing part of the question.
Score: 2"""

TRUNCATED = """The response is relevant and provides some information about photosynthesis, so it earns \
the first point. It also addresses a substantial portion of the question, but it does not"""

PARSES = [
    # (a) a realistic conclusion, on its own line and at the end of the justification line
    ("The response is relevant and answers the basic elements of the question, but it is not "
     "written from an AI Assistant's perspective.\n\nScore: 3", ParsedScore(3, "ok")),
    ("The response is relevant and answers the basic elements. Score: 3", ParsedScore(3, "ok")),
    (QUOTING, ParsedScore(2, "ok")),  # (b) the quoted 5 mid-text is not the conclusion
    ("The answer is thorough and expert.\nScore: 7", ParsedScore(None, "out_of_range")),  # (c)
    ("The response is well organised and helpful.", ParsedScore(None, "no_score")),  # (d)
    ("Score: 4\n\nScore: 1", ParsedScore(1, "ok")),  # (e) the last conclusion wins
    ("Helpful and direct.\n**Score:** 4", ParsedScore(4, "ok")),  # (f)
    ("Relevant and complete.\nscore: 5.", ParsedScore(5, "ok")),  # (g)
    ("I give it a Score of 3", ParsedScore(None, "no_score")),  # (h) not the format
    (TRUNCATED, ParsedScore(None, "no_score")),  # (i)
    # markdown, decimals and scales
    ("**Score**: 4", ParsedScore(4, "ok")),
    ("Score: **4**", ParsedScore(4, "ok")),
    ("### Final Score: 2\n", ParsedScore(2, "ok")),
    ("  - Total score: 0", ParsedScore(0, "ok")),  # zero points is a real score
    ("Score: 4.0", ParsedScore(4, "ok")),
    ("Score: 3/5", ParsedScore(3, "ok")),
    ("It deserves most points. Score: 4 out of 5.", ParsedScore(4, "ok")),
    ("Score: 4.5", ParsedScore(None, "out_of_range")),
    ("Score: 4,5", ParsedScore(None, "out_of_range")),
    ("Score: 8/10", ParsedScore(None, "out_of_range")),
    ("Score: -1", ParsedScore(None, "out_of_range")),
    ("Conclude with the score using the format: \"Score: <total points>\"", ParsedScore(None, "no_score")),
    # quoted lines and a quoted score at the very end are not the judge's conclusion
    ("> Score: 5\nThe response above grades itself.", ParsedScore(None, "no_score")),
    ("The response ends with 'Score: 5'", ParsedScore(None, "no_score")),
    ("<response>Score: 5</response> is all it says.", ParsedScore(None, "no_score")),
    # a later score inside the text that is neither a line start nor the end does not override
    ("Score: 2\nThe reply claims Score: 5 for itself, which earns nothing.", ParsedScore(2, "ok")),
    ("", ParsedScore(None, "no_score")),
]


@pytest.mark.parametrize("text, expected", PARSES)
def test_parse_score(text, expected):
    assert parse_score(text) == expected


def test_parse_keeps_the_raw_number_for_logs():
    assert parse_score("Score: 7").raw == "7"
    assert parse_score("Score: 4.0").raw == "4.0"
    assert parse_score("nothing").raw is None


def test_a_failure_is_never_zero():
    for text, _ in PARSES:
        parsed = parse_score(text)
        assert (parsed.score is None) == (parsed.status != "ok")


def test_aggregate_mixed_statuses():
    scores = [parse_score(t) for t in ("Score: 4", "Score: 3", "no score here", "Score: 9", "Score: 4")]
    assert aggregate(scores) == {"mean": pytest.approx(11 / 3), "n_judgements": 5, "n_ok": 3,
                                 "n_no_score": 1, "n_out_of_range": 1}
    assert aggregate([ParsedScore(None, "no_score")])["mean"] is None
    assert aggregate([])["mean"] is None
    assert aggregate([ParsedScore(0, "ok")])["mean"] == 0.0


# --- pairs ---------------------------------------------------------------------------------------

def cand(cid, score, response=None, truncated=False):
    return {"id": cid, "response": response if response is not None else f"reply {cid}",
            "mean_score": score, "truncated": truncated}


def test_highest_and_lowest_make_the_pair():
    pair, reason = build_pair([cand("c0", 3.0), cand("c1", 4.5), cand("c2", 1.0), cand("c3", 2.0)])
    assert reason == "paired"
    assert pair == {"chosen_id": "c1", "rejected_id": "c2", "score_chosen": 4.5, "score_rejected": 1.0}


def test_ties_and_unscored_are_dropped_with_a_reason():
    assert build_pair([cand("a", 4.0), cand("b", 4.0), cand("c", 4.0)]) == (None, "tie")
    assert build_pair([cand("a", 4.0), cand("b", None), cand("c", None)]) == (None, "too_few_scored")
    assert build_pair([]) == (None, "too_few_scored")
    # unscored candidates are left out, the rest still pair
    pair, reason = build_pair([cand("a", None), cand("b", 2.0), cand("c", 5.0)])
    assert (pair["chosen_id"], pair["rejected_id"], reason) == ("c", "b", "paired")


def test_truncated_is_never_chosen():
    # the top is truncated: the next untruncated top is chosen while it still beats the minimum
    pair, reason = build_pair([cand("a", 5.0, truncated=True), cand("b", 3.0), cand("c", 1.0)])
    assert (pair["chosen_id"], pair["rejected_id"], pair["score_chosen"], reason) == ("b", "c", 3.0, "paired")
    # ... else no pair
    assert build_pair([cand("a", 5.0, truncated=True), cand("b", 1.0), cand("c", 1.0)]) == (None, "no_untruncated_top")
    assert build_pair([cand("a", 5.0, truncated=True), cand("b", 1.0, truncated=True)]) == (None, "no_untruncated_top")
    # a truncated reply may be rejected
    pair, _ = build_pair([cand("a", 4.0), cand("b", 0.0, truncated=True)])
    assert (pair["chosen_id"], pair["rejected_id"]) == ("a", "b")
    # and with length control too
    pair, _ = build_pair([cand("a", 5.0, "x", truncated=True), cand("b", 4.0, "xx"), cand("c", 1.0)], 0.5)
    assert pair["chosen_id"] == "b"


def test_equal_extremes_are_picked_by_lowest_id_not_position_or_length():
    candidates = [cand("c10", 5.0, "short"), cand("c2", 5.0, "a much longer reply"), cand("c3", 1.0, "x" * 50),
                  cand("c1", 1.0, "y")]
    for order in (candidates, candidates[::-1], candidates[1:] + candidates[:1]):
        pair, _ = build_pair(order)
        assert (pair["chosen_id"], pair["rejected_id"]) == ("c2", "c1")  # natural order: c2 < c10


def test_length_control_picks_shortest_near_top_and_longest_near_bottom():
    # s_max 5, s_min 1, rho 0.5: chosen among mean >= 3, rejected among mean <= 3
    candidates = [cand("top", 5.0, "x" * 300), cand("good", 4.0, "x" * 120), cand("mid", 3.0, "x" * 80),
                  cand("low", 2.0, "x" * 400), cand("worst", 1.0, "x" * 50)]
    pair, reason = build_pair(candidates, length_control=0.5)
    assert reason == "paired"
    assert pair == {"chosen_id": "mid", "rejected_id": "low", "score_chosen": 3.0, "score_rejected": 2.0}
    # rho 0.25: chosen among >= 4, rejected among <= 2
    pair, _ = build_pair(candidates, length_control=0.25)
    assert (pair["chosen_id"], pair["rejected_id"]) == ("good", "low")
    # rho 0: the plain extremes, whatever the lengths
    pair, _ = build_pair(candidates, length_control=0.0)
    assert (pair["chosen_id"], pair["rejected_id"]) == ("top", "worst")


def test_length_control_windows_meeting_on_one_score_are_a_tie():
    # rho 0.5: b sits on the midpoint 3, shortest of [3, 5] and longest of [1, 3] at once
    candidates = [cand("a", 5.0, "x" * 100), cand("b", 3.0, "x" * 50), cand("c", 1.0, "x" * 10)]
    assert build_pair(candidates, 0.5) == (None, "tie")
    assert build_pair(candidates, 0.4)[0]["chosen_id"] == "a"  # windows [3.4, 5] and [1, 2.6]


def test_length_control_range_is_checked():
    with pytest.raises(ValueError, match="length_control"):
        build_pair([cand("a", 1.0), cand("b", 2.0)], length_control=1.5)


def test_build_pairs_counts_every_reason_and_is_deterministic():
    groups = {"p1": [cand("p1#0", 4.0), cand("p1#1", 2.0)],
              "p2": [cand("p2#0", 3.0), cand("p2#1", 3.0)],
              "p3": [cand("p3#0", None), cand("p3#1", 5.0)],
              "p4": [cand("p4#0", 5.0, truncated=True), cand("p4#1", 1.0)]}
    pairs, counts = build_pairs(groups)
    assert pairs == [{"prompt_id": "p1", "chosen_id": "p1#0", "rejected_id": "p1#1",
                      "score_chosen": 4.0, "score_rejected": 2.0}]
    assert counts == {"prompts": 4, "paired": 1, "tie": 1, "too_few_scored": 1, "no_untruncated_top": 1,
                      "candidates": 8, "unscored_candidates": 1, "truncated_candidates": 1}
    assert build_pairs(groups) == (pairs, counts)


# --- judge accuracy ------------------------------------------------------------------------------

def truth(cid, judge, true):
    return {"id": cid, "mean_score": judge, "true_score": true}


# worked by hand (see the comments of the test below)
HAND = {"p1": [truth("a", 4.0, 4), truth("b", 3.0, 2), truth("c", 1.0, 2), truth("d", None, 0)],
        "p2": [truth("e", 2.0, 5), truth("f", 2.0, 1), truth("g", 5.0, 3)]}


def test_judge_agreement_on_a_hand_example():
    result = judge_agreement(HAND)
    # pairs with different truth and both parsed: ab ok, ac ok, (bc same truth), ef judge tie, eg wrong, fg ok
    assert result["n_pairs"] == 5 and result["judge_ties"] == 1 and result["n_pairs_unscored"] == 3  # ad bd cd
    assert result["n_decided"] == 4
    assert result["pairwise_accuracy"] == pytest.approx(3 / 4)  # the tie is neither right nor wrong
    assert result["judge_tie_rate"] == pytest.approx(1 / 5)
    assert result["pairwise_ties_half"] == pytest.approx(3.5 / 5)
    assert result["exact_agreement"] == pytest.approx(1 / 6)  # only a
    # judge [4,3,1,2,2,5] ranks [5,4,1,2.5,2.5,6]; truth [4,2,2,5,1,3] ranks [5,2.5,2.5,6,1,4]
    # deviations from 3.5: sum of products 5.5, sums of squares 17 and 17
    assert result["spearman"] == pytest.approx(5.5 / 17)
    # 8 concordant, 5 discordant, one tie in each variable, 15 pairs: 3 / sqrt(14 * 14)
    assert result["kendall_tau_b"] == pytest.approx(3 / 14)
    assert result["parse_failure_rate"] == pytest.approx(1 / 7)
    assert (result["n_candidates"], result["n_scored"]) == (7, 6)
    assert "n_judgements" not in result


def test_judge_agreement_over_finished_replies_only():
    # the judge ranks by "cut off or not" alone: right on every pair with a cut-off reply, wrong among the others
    groups = {"p": [dict(truth("a", 3.0, 4), truncated=False), dict(truth("b", 3.5, 3), truncated=False),
                    dict(truth("c", 1.0, 1), truncated=True), dict(truth("d", 1.5, 0), truncated=True)],
              "q": [dict(truth("e", 2.0, 5), truncated=False), dict(truth("f", 4.0, 2), truncated=False),
                    dict(truth("g", 0.5, 1), truncated=True)]}
    result = judge_agreement(groups)
    # all: p has 6 pairs (ab wrong, cd wrong, the 4 across right), q has 3 (ef wrong, eg fg right): 6 of 9
    assert result["n_decided"] == 9 and result["pairwise_accuracy"] == pytest.approx(6 / 9)
    finished = result["finished"]
    assert finished["n_candidates"] == 4 and finished["n_decided"] == 2 and finished["pairwise_accuracy"] == 0.0
    # one finished pair per prompt: a shuffle of two scores gets it right half the time
    assert finished["chance"]["pairwise_accuracy"] == pytest.approx(0.5, abs=0.1)
    # without `truncated` every reply counts as finished: the same figures as over all candidates
    plain = judge_agreement(HAND)
    assert plain["finished"]["pairwise_accuracy"] == plain["pairwise_accuracy"]
    assert plain["finished"]["n_decided"] == plain["n_decided"]


def test_judge_agreement_sums_judgement_counts_when_given():
    def judged(cid, true, texts):
        summary = aggregate([parse_score(t) for t in texts])
        return {**truth(cid, summary.pop("mean"), true), **summary}

    groups = {"p": [judged("a", 3, ["x", "Score: 9"]), judged("b", 1, ["Score: 1", "y"])]}
    result = judge_agreement(groups)
    assert (result["n_judgements"], result["n_no_score"], result["n_out_of_range"]) == (4, 2, 1)
    assert result["judgement_failure_rate"] == pytest.approx(3 / 4)
    assert result["n_scored"] == 1 and result["spearman"] is None and result["pairwise_accuracy"] is None


def test_perfect_and_reversed_judges():
    true_scores = [[5, 3, 1, 0], [4, 2, 2, 1], [0, 5]]
    perfect = {f"p{i}": [truth(f"p{i}#{j}", s + 0.25, s) for j, s in enumerate(row)] for i, row in enumerate(true_scores)}
    result = judge_agreement(perfect)
    assert (result["pairwise_accuracy"], result["spearman"], result["kendall_tau_b"]) == (1.0, pytest.approx(1.0),
                                                                                          pytest.approx(1.0))
    assert result["judge_ties"] == 0 and result["exact_agreement"] == 1.0
    # [5,3,1,0] has 6 pairs, [4,2,2,1] 5 (the two 2s are no pair), [0,5] 1
    assert (result["n_decided"], result["n_pairs"], result["judge_tie_rate"], result["pairwise_ties_half"]) == (
        12, 12, 0.0, 1.0)
    reversed_ = {f"p{i}": [truth(f"p{i}#{j}", 5 - s, s) for j, s in enumerate(row)] for i, row in enumerate(true_scores)}
    result = judge_agreement(reversed_)
    assert result["pairwise_accuracy"] == 0.0 and result["pairwise_ties_half"] == 0.0 and result["n_decided"] == 12
    assert result["spearman"] == pytest.approx(-1.0) and result["kendall_tau_b"] == pytest.approx(-1.0)


def brute_rank(values, i):
    """Average rank by its definition: 1 + (values below) + (other equal values) / 2."""
    return 1 + sum(v < values[i] for v in values) + (sum(v == values[i] for v in values) - 1) / 2


def brute_tau_b(xs, ys):
    sign = lambda v: (v > 0) - (v < 0)  # noqa: E731
    pairs = list(combinations(range(len(xs)), 2))
    s = sum(sign(xs[i] - xs[j]) * sign(ys[i] - ys[j]) for i, j in pairs)
    tx = sum(xs[i] != xs[j] for i, j in pairs)
    ty = sum(ys[i] != ys[j] for i, j in pairs)
    return s / math.sqrt(tx * ty)


def test_correlations_match_a_brute_force_reference():
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(3, 12)
        xs = [rng.choice([0, 1 / 3, 2 / 3, 1, 2, 3, 4, 5]) for _ in range(n)]
        ys = [rng.randint(0, 5) for _ in range(n)]
        if len(set(xs)) < 2 or len(set(ys)) < 2:
            continue
        rx, ry = [brute_rank(xs, i) for i in range(n)], [brute_rank(ys, i) for i in range(n)]
        assert average_ranks(xs) == rx
        mx, my = sum(rx) / n, sum(ry) / n
        ref = (sum((a - mx) * (b - my) for a, b in zip(rx, ry))
               / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)))
        assert spearman(xs, ys) == pytest.approx(ref)
        assert kendall_tau_b(xs, ys) == pytest.approx(brute_tau_b(xs, ys))
    assert spearman([1, 1, 1], [1, 2, 3]) is None and kendall_tau_b([1, 1], [1, 2]) is None
    assert spearman([1], [2]) is None


def test_judge_giving_one_score_to_everything_decides_nothing():
    same = {"p1": [truth("a", 3.0, 5), truth("b", 3.0, 2), truth("c", 3.0, 0)],
            "p2": [truth("d", 3.0, 4), truth("e", 3.0, 1)]}
    result = judge_agreement(same)
    assert (result["n_decided"], result["judge_ties"], result["n_pairs"]) == (0, 4, 4)
    assert result["pairwise_accuracy"] is None and result["judge_tie_rate"] == 1.0
    assert result["pairwise_ties_half"] == 0.5
    assert result["spearman"] is None  # a constant judge has no correlation
    chance = result["chance"]
    assert chance["pairwise_accuracy"] is None and chance["judge_tie_rate"] == 1.0 and chance["pairwise_ties_half"] == 0.5


def test_judge_agreement_on_a_mixed_case_with_float_scores():
    # continuous (expected-score) judge: only exactly equal scores tie
    groups = {"p1": [truth("a", 4.31, 5), truth("b", 4.30, 2), truth("c", 2.95, 3), truth("d", 2.95, 0)],
              "p2": [truth("e", 1.2, 1), truth("f", 3.333, 4), truth("g", None, 5)]}
    result = judge_agreement(groups)
    # p1: ab ok, ac ok, ad ok, bc wrong (4.30 > 2.95 but 2 < 3), bd ok, cd tie; p2: ef ok, eg fg unscored
    assert (result["n_decided"], result["judge_ties"], result["n_pairs"], result["n_pairs_unscored"]) == (6, 1, 7, 2)
    assert result["pairwise_accuracy"] == pytest.approx(5 / 6)
    assert result["judge_tie_rate"] == pytest.approx(1 / 7)
    assert result["pairwise_ties_half"] == pytest.approx(5.5 / 7)
    # rounded half up: 4, 4, 3, 3, 1, 3 against 5, 2, 3, 0, 1, 4: c and e agree
    assert result["exact_agreement"] == pytest.approx(2 / 6)


def test_chance_of_the_tie_rate_worked_by_hand():
    # one group, judge [3, 3, 1], truths all different: every shuffle puts the two 3s on one of the
    # three truth pairs, so exactly 1 of 3 pairs is a tie, whatever the shuffle; with judge [3, 2, 1]
    # no shuffle makes a tie
    tied = judge_agreement({"p": [truth("a", 3, 1), truth("b", 3, 2), truth("c", 1, 3)]})
    assert tied["chance"]["judge_tie_rate"] == pytest.approx(1 / 3) == tied["judge_tie_rate"]
    distinct = judge_agreement({"p": [truth("a", 3, 1), truth("b", 2, 2), truth("c", 1, 3)]})
    assert distinct["chance"]["judge_tie_rate"] == 0.0 and distinct["chance"]["permutations"] == 200


def several_groups(judge, n_groups=60, size=4, seed=3):
    """Groups of `size` candidates with random truths 0..5; the judge's score is judge(truth, rng)."""
    rng = random.Random(seed)
    groups = {}
    for g in range(n_groups):
        truths = [rng.randint(0, 5) for _ in range(size)]
        groups[f"p{g}"] = [{"id": f"p{g}#{k}", "response": "x" * rng.randint(1, 60), "truncated": False,
                            "true_score": t, "mean_score": judge(t, rng)} for k, t in enumerate(truths)]
    return groups


def test_chance_of_a_perfect_judge_is_a_coin_on_decided_pairs():
    result = judge_agreement(several_groups(lambda t, rng: t + 0.5))
    assert result["pairwise_accuracy"] == 1.0
    assert result["chance"]["pairwise_accuracy"] == pytest.approx(0.5, abs=0.03)
    assert result["chance"]["pairwise_ties_half"] == pytest.approx(0.5, abs=0.03)
    # the shuffles keep each prompt's scores, so the judge's per-prompt levels stay: with 4 candidates of
    # independent truths per prompt, they carry ~1/4 of the variance, and the chance correlation is ~0.25
    assert 0.1 < result["chance"]["spearman"] < 0.45


def test_a_judge_that_ignores_the_reply_scores_its_chance_level():
    # integer scores favouring 2, 3 and 5: under the old definition (ties counted as wrong) this judge
    # read ~37%; on decided pairs it reads a coin, and its chance level says so
    result = judge_agreement(several_groups(lambda t, rng: rng.choice([0, 1, 2, 2, 3, 3, 3, 5, 5, 5]), n_groups=300))
    chance = result["chance"]
    assert result["pairwise_accuracy"] == pytest.approx(0.5, abs=0.06)
    assert chance["pairwise_accuracy"] == pytest.approx(result["pairwise_accuracy"], abs=0.06)
    assert chance["judge_tie_rate"] == pytest.approx(result["judge_tie_rate"], abs=0.04)
    assert result["judge_tie_rate"] > 0.15
    assert chance["exact_agreement"] == pytest.approx(result["exact_agreement"], abs=0.05)


def test_chance_keeps_what_the_judge_knows_about_the_prompt():
    # a judge that gives every reply of a prompt the prompt's mean truth: no pair is decided, and its
    # correlation across prompts is all chance (shuffling within a prompt changes nothing)
    groups = several_groups(lambda t, rng: None)
    for candidates in groups.values():
        level = sum(c["true_score"] for c in candidates) / len(candidates)
        for c in candidates:
            c["mean_score"] = level
    result = judge_agreement(groups)
    assert result["n_decided"] == 0 and result["spearman"] > 0.2
    assert result["chance"]["spearman"] == pytest.approx(result["spearman"])
    assert result["chance"]["exact_agreement"] == pytest.approx(result["exact_agreement"])


def test_chance_is_deterministic_and_seeded():
    groups = several_groups(lambda t, rng: rng.randint(0, 5), n_groups=15)
    first = judge_agreement(groups)["chance"]
    assert judge_agreement(groups)["chance"] == first
    assert judge_agreement(groups, seed=1)["chance"] != first
    assert judge_agreement(groups, permutations=0)["chance"]["pairwise_accuracy"] is None
    pairs_first = pair_precision_chance(groups)
    assert pair_precision_chance(groups) == pairs_first
    assert pair_precision_chance(groups, seed=1) != pairs_first


def test_pair_precision_splits_right_equal_and_wrong():
    pairs = [{"chosen_id": "a", "rejected_id": "b"}, {"chosen_id": "c", "rejected_id": "d"},
             {"chosen_id": "e", "rejected_id": "f"}, {"chosen_id": "g", "rejected_id": "h"}]
    true = {"a": 5, "b": 1, "c": 2, "d": 2, "e": 0, "f": 3, "g": 4, "h": 2}  # right, equal, wrong, right
    assert pair_precision(pairs, true) == {"n_pairs": 4, "right": 2, "equal_truth": 1, "wrong": 1,
                                           "precision": 0.5, "precision_decided": pytest.approx(2 / 3),
                                           "equal_truth_rate": 0.25}
    only_equal = pair_precision(pairs[1:2], true)
    assert only_equal["precision"] == 0.0 and only_equal["precision_decided"] is None
    empty = pair_precision([], true)
    assert empty["n_pairs"] == 0 and empty["precision"] is None and empty["precision_decided"] is None
    with pytest.raises(ValueError, match="'zz'"):
        pair_precision([{"chosen_id": "a", "rejected_id": "zz"}], true)


def sr_cand(cid, score, true, truncated=False):
    return {**cand(cid, score, truncated=truncated), "true_score": true}


def test_pair_precision_chance_rebuilds_pairs_from_shuffled_scores():
    groups = {  # p1: a shuffle chooses the truly better reply or not: a coin
              "p1": [sr_cand("a", 4.0, 5), sr_cand("b", 1.0, 2)],
              # p2: every reply cut off, never a pair; p3: one parsed score, never a pair
              "p2": [sr_cand("c", 5.0, 5, truncated=True), sr_cand("d", 2.0, 1, truncated=True)],
              "p3": [sr_cand("e", None, 5), sr_cand("f", 3.0, 1)],
              # p4: truths [5, 5, 2], judge [3, 2, 1]: equal, right and wrong each 1/3 of the shuffles
              "p4": [sr_cand("g", 3.0, 5), sr_cand("h", 2.0, 5), sr_cand("i", 1.0, 2)]}
    before = repr(groups)
    chance = pair_precision_chance(groups)
    assert repr(groups) == before  # the caller's candidates are not touched
    assert chance["pairs"] == 2.0 and chance["permutations"] == 200
    assert chance["equal_truth_rate"] == pytest.approx(1 / 6, abs=0.05)
    assert chance["precision_decided"] == pytest.approx(0.5, abs=0.08)
    assert chance["precision"] == pytest.approx(5 / 12, abs=0.08)  # (1/2 + 1/3) / 2


def test_pair_precision_chance_of_a_perfect_judge_with_float_scores():
    groups = several_groups(lambda t, rng: t + rng.random() / 2)  # continuous, order follows the truth
    pairs, _ = build_pairs(groups)
    split = pair_precision(pairs, {c["id"]: c["true_score"] for cs in groups.values() for c in cs})
    assert split["wrong"] == split["equal_truth"] == 0 and split["precision"] == 1.0
    chance = pair_precision_chance(groups, length_control=0.5)
    assert chance["precision_decided"] == pytest.approx(0.5, abs=0.05)
    assert 0 < chance["equal_truth_rate"] < 0.3


def test_score_histogram():
    assert score_histogram([5.0, 4.6667, 2.5, 0.0, None, 1.3333]) == {
        "0": 1, "1": 1, "2": 0, "3": 1, "4": 0, "5": 2, "none": 1}  # 2.5 rounds half up to 3
    assert score_histogram([]) == {"0": 0, "1": 0, "2": 0, "3": 0, "4": 0, "5": 0, "none": 0}
    with pytest.raises(ValueError):
        score_histogram([7.0])


def test_length_stats():
    pairs = [{"chosen_id": "a", "rejected_id": "b"}, {"chosen_id": "c", "rejected_id": "d"}]
    responses = {"a": "x" * 10, "b": "x" * 4, "c": "x" * 2, "d": "x" * 6}
    assert length_stats(pairs, responses) == {"n_pairs": 2, "mean_chosen_chars": 6.0, "mean_rejected_chars": 5.0,
                                              "chosen_longer_rate": 0.5}
    assert length_stats([], responses)["mean_chosen_chars"] is None


def test_parser_on_real_judgements_of_the_embedded_model_after_eft():
    """Judgements SmolLM2-135M wrote as M1 (EFT on the paper's rubric), with what the parser makes of
    them: a score quoted inside the reasoning ("end with: \"Score: 100\"") is never taken, an unclosed
    quote is no score, "Score: 10" is out of range, a markdown list item "- *score: 2*" is a score."""
    import json
    from pathlib import Path

    from selftrain.self_rewarding import judgement_score

    rows = [json.loads(line) for line in (Path(__file__).parent / "data" / "judgements_smollm2_m1.jsonl").open()]
    assert len(rows) == 12
    for row in rows:
        text = row["judgement"]
        if row["finish_reason"] == "stop":
            assert parse_score(text) == ParsedScore(row["score"], row["status"]), text[-120:]
        else:  # cut off at the token limit: never a verdict, even after an earlier "Score: 2" line
            assert judgement_score({"response": text, "finish_reason": "length"}) == ParsedScore(None, NO_SCORE)
    statuses = [r["status"] for r in rows if r["finish_reason"] == "stop"]
    assert statuses.count("ok") == 5 and statuses.count("no_score") == 3 and statuses.count("out_of_range") == 1
