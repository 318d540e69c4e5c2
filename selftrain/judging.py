"""LLM-as-a-judge for Self-Rewarding: the judge prompt, score parsing, pairing and judge accuracy.

Pure Python, standard library only. The contracts, and where each rule comes from
(Yuan et al. 2024, "Self-Rewarding Language Models", arXiv 2401.10020; the implementations
compared in /work/shared/notes/dpo-and-self-rewarding.md section 3):

Prompt. `DEFAULT_JUDGE_TEMPLATE` is the paper's additive 5-point rubric (Figure 2, the text
lucidrains, NeMo-Aligner and AutoAlign share), with ASCII quotes and one line per criterion.
A template has the placeholders `{prompt}` and `{response}`, filled in one pass by
`render_judge_prompt` (no `str.format`: replies contain braces, and a prompt that contains the
text "{response}" is left as written).

Parsing (`parse_score`). The three implementations take the FIRST "Score: N" (`re.search`),
so a score quoted from the response being judged wins; lucidrains' regex `\\nScore: ([0-9.]+)\\n`
never matches a final "Score: 4" at the end of the text. Here the judge's conclusion is:
  the LAST "Score: N" that either starts a line (after optional spaces, tabs and the
  markdown marks `* _ # -`) or ends the text (followed by nothing but an optional "/5" or
  "out of 5", an optional "point(s)", spaces, ".", "!" and markdown, and not preceded by a
  letter, digit or quote mark).
"Score" is case-insensitive and may read "Final/Total/Overall score"; markdown bold may sit
around the label, the colon or the number ("**Score:** 4", "**Score**: 4", "Score: **4**").
A quoted line ("> Score: 5", "\\"Score: 5") does not start a line in this sense. N is read as
`[-+]?[0-9]+([.,][0-9]+)?`; only a whole number 0..5 is a score ("4.0" is 4; "4.5", "7",
"8/10", "-1" are `out_of_range`; "3/5" is 3). No match at all is `no_score` ("a Score of 3",
"Score: <total points>", a judgement cut off before its score). A failure never becomes 0:
its score is None. Known limit: a judge that echoes a response line starting with
"Score: 5" and then writes no conclusion of its own gets that 5.

Averaging (`aggregate`). The paper samples the judge 3 times and averages (§3.1.3); failed
judgements are dropped and counted per status (NeMo, AutoAlign), the mean is None when none
parsed (lucidrains' NaN, AutoAlign's -1 and 0.0 fallbacks are the anti-pattern).

Pairs (`build_pair`, `build_pairs`). Paper §2.3: chosen = highest mean, rejected = lowest,
"discarding the pair if their scores are the same". Candidates without a mean are left out;
truncated candidates (no EOS) are never chosen but may be rejected (NeMo excludes them, TRL
#1623); ties are dropped and counted, never broken by position or length (lucidrains `break`s,
NeMo masks a random pair). Length control ρ in [0, 1] is NeMo-Aligner's rule: chosen = the
shortest (characters) untruncated candidate with mean >= (1-ρ)·s_top + ρ·s_min, rejected = the
longest with mean <= (1-ρ)·s_min + ρ·s_top, where s_top is the best untruncated mean. With ρ=0
the equal-score extremes are chosen by lowest candidate id (natural order, "c2" < "c10"): their
scores are equal, so the pick carries no score information and no position bias. A pair needs
score_chosen > score_rejected. Reasons: "paired", "too_few_scored" (< 2 scored candidates),
"tie" (all scored means equal, or length-control windows that meet on one score),
"no_untruncated_top" (only truncated candidates score above the minimum).

Judge accuracy (`judge_agreement`, notes 4.2 point 5; the paper's Table 4). Against a
rule-checked true score per candidate, over same-prompt pairs whose true scores differ and
both judge scores parsed: `pairwise_accuracy` = correct / decided, where a pair is decided when
the judge's two scores differ (None when none is); `judge_tie_rate` = judge ties / all such
pairs; `pairwise_ties_half` counts a tie as half right. A tie is never counted as wrong: a
judge scored once per candidate gives whole numbers 0..5 and ties often, and counting ties as
failures puts a judge that ignores the reply at ~36-42%, not 50%. Also exact agreement (mean
rounded half up == truth), Spearman and Kendall tau-b over all parsed candidates (average
ranks for ties, in house). Candidates without a parsed score are reported as the
parse-failure rate and never enter the correlations or the pairs (AutoAlign folds them in as
-1). Scores may be whole numbers, means of several judgements or continuous expected scores.

Chance levels (`chance` in `judge_agreement`, `pair_precision_chance`). Every judge figure comes
with the value the same judge reaches with its scores shuffled among the parsed candidates of
each prompt (`CHANCE_PERMUTATIONS` seeded shuffles, each figure averaged over the shuffles where
it is defined): the same score spread, the same per-prompt levels, no information about which
reply is which. A figure is read against its chance level, not against 50% or 0.

Pair precision (`pair_precision`). The pairs a round trains on, split by their true scores:
`right` (chosen truly higher), `equal_truth` (both replies truly equal: noise for DPO, neither
right nor wrong), `wrong`; `precision` = right / all pairs, `precision_decided` =
right / (right + wrong).
"""
from __future__ import annotations

import math
import random
import re
import statistics
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from selftrain.errors import InputError

DEFAULT_JUDGE_TEMPLATE = """\
Review the user's question and the corresponding response using the additive 5-point scoring \
system described below. Points are accumulated based on the satisfaction of each criterion:
- Add 1 point if the response is relevant and provides some information related to the user's \
inquiry, even if it is incomplete or contains some irrelevant content.
- Add another point if the response addresses a substantial portion of the user's question, but \
does not completely resolve the query or provide a direct answer.
- Award a third point if the response answers the basic elements of the user's question in a \
useful way, regardless of whether it seems to have been written by an AI Assistant or if it has \
elements typically found in blogs or search results.
- Grant a fourth point if the response is clearly written from an AI Assistant's perspective, \
addressing the user's question directly and comprehensively, and is well-organized and helpful, \
even if there is slight room for improvement in clarity, conciseness or focus.
- Bestow a fifth point for a response that is impeccably tailored to the user's question by an \
AI Assistant, without extraneous information, reflecting expert knowledge, and demonstrating a \
high-quality, engaging, and insightful answer.

User: {prompt}

<response>{response}</response>

After examining the user's instruction and the response:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Score: <total points>"
Remember to assess from the AI Assistant perspective, utilizing web search knowledge as \
necessary. To evaluate the response in alignment with this additive scoring model, we'll \
systematically attribute points based on the outlined criteria."""

PLACEHOLDERS = ("{prompt}", "{response}")
MIN_SCORE, MAX_SCORE = 0, 5
OK, NO_SCORE, OUT_OF_RANGE = "ok", "no_score", "out_of_range"
PAIR_REASONS = ("paired", "tie", "too_few_scored", "no_untruncated_top")
# shuffles behind a chance level: 200 leave it about half a point of noise on a judge set of ~100
# candidates; a fixed seed makes a marker reproducible
CHANCE_PERMUTATIONS, CHANCE_SEED = 200, 0


# --- the judge prompt ----------------------------------------------------------------------------

def check_template(text: str, where: str) -> None:
    for placeholder in PLACEHOLDERS:
        if placeholder not in text:
            raise InputError(f"{where}: judge template: no {placeholder} placeholder")


def load_template(path_or_empty: str | Path | None) -> str:
    """The template in the file, checked; the default when the path is empty or None."""
    if not path_or_empty:
        return DEFAULT_JUDGE_TEMPLATE
    path = Path(path_or_empty)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: judge template file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: judge template: cannot read: {e}") from None
    check_template(text, str(path))
    return text


def render_judge_prompt(template: str, prompt: str, response: str) -> str:
    values = {"{prompt}": prompt, "{response}": response}
    return re.sub(r"\{prompt\}|\{response\}", lambda m: values[m.group(0)], template)


# --- parsing one judgement -----------------------------------------------------------------------

@dataclass(frozen=True)
class ParsedScore:
    score: int | None  # 0..5 when status is "ok", else None (a failure is never a 0)
    status: str  # "ok" | "no_score" | "out_of_range"
    raw: str | None = field(default=None, compare=False)  # the number as written, for logs


_LABEL = r"(?:(?:final|total|overall)[ \t]+)?score[ \t]*[*_]*[ \t]*:[ \t]*[*_]*[ \t]*"
_NUMBER = r"([-+]?[0-9]+(?:[.,][0-9]+)?)"
_AT_LINE_START = re.compile(r"^[ \t*_#-]*" + _LABEL + _NUMBER, re.IGNORECASE | re.MULTILINE)
_AT_TEXT_END = re.compile(r"(?<![\w\"'`\u201c\u2018])" + _LABEL + _NUMBER
                          + r"(?:[ \t]*(?:/|out[ \t]+of)[ \t]*5)?(?:[ \t]*points?)?[\s.!*_]*\Z",
                          re.IGNORECASE)


def parse_score(text: str) -> ParsedScore:
    """The judge's conclusion "Score: N" (the rule is in the module docstring)."""
    matches = list(_AT_LINE_START.finditer(text))
    tail = _AT_TEXT_END.search(text)
    if tail:
        matches.append(tail)
    if not matches:
        return ParsedScore(None, NO_SCORE)
    raw = max(matches, key=lambda m: m.start()).group(1)
    value = float(raw.replace(",", "."))
    if not value.is_integer() or not MIN_SCORE <= value <= MAX_SCORE:
        return ParsedScore(None, OUT_OF_RANGE, raw)
    return ParsedScore(int(value), OK, raw)


def aggregate(scores: list[ParsedScore]) -> dict:
    """One candidate's judgements: `mean` of the parsed ones (None if none; a candidate carries it as
    `mean_score`), and the counts per status."""
    parsed = [s.score for s in scores if s.status == OK]
    return {"mean": statistics.fmean(parsed) if parsed else None,
            "n_judgements": len(scores),
            "n_ok": len(parsed),
            "n_no_score": sum(s.status == NO_SCORE for s in scores),
            "n_out_of_range": sum(s.status == OUT_OF_RANGE for s in scores)}


# --- preference pairs ----------------------------------------------------------------------------

def _id_key(candidate: dict) -> tuple:
    """Natural order of ids: "c2" before "c10"; ints and strings mix without a TypeError."""
    parts = re.split(r"([0-9]+)", str(candidate["id"]))
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p)


def build_pair(candidates: list[dict], length_control: float = 0.0) -> tuple[dict | None, str]:
    """One prompt's (chosen, rejected) pair, or None, and the reason (see PAIR_REASONS).

    Each candidate has `id`, `response`, `mean_score` (float or None) and `truncated` (bool).
    """
    if not 0.0 <= length_control <= 1.0:
        raise ValueError(f"length_control must be in [0, 1], got {length_control}")
    scored = [c for c in candidates if c["mean_score"] is not None]
    if len(scored) < 2:
        return None, "too_few_scored"
    s_min = min(c["mean_score"] for c in scored)
    if max(c["mean_score"] for c in scored) == s_min:
        return None, "tie"
    eligible = [c for c in scored if not c["truncated"] and c["mean_score"] > s_min]
    if not eligible:
        return None, "no_untruncated_top"
    s_top = max(c["mean_score"] for c in eligible)
    rho, slack = length_control, 1e-9  # slack: a mean on the window's edge stays in despite float error
    top = [c for c in eligible if c["mean_score"] >= (1 - rho) * s_top + rho * s_min - slack]
    bottom = [c for c in scored if c["mean_score"] <= (1 - rho) * s_min + rho * s_top + slack]
    if rho == 0:  # equal scores at each extreme: lowest id
        chosen, rejected = min(top, key=_id_key), min(bottom, key=_id_key)
    else:  # NeMo-Aligner: shortest near the top, longest near the bottom
        chosen = min(top, key=lambda c: (len(c["response"]), -c["mean_score"], _id_key(c)))
        rejected = min(bottom, key=lambda c: (-len(c["response"]), c["mean_score"], _id_key(c)))
    if chosen["mean_score"] <= rejected["mean_score"]:
        return None, "tie"
    return {"chosen_id": chosen["id"], "rejected_id": rejected["id"],
            "score_chosen": chosen["mean_score"], "score_rejected": rejected["mean_score"]}, "paired"


def build_pairs(groups: dict, length_control: float = 0.0) -> tuple[list[dict], dict]:
    """A pair per prompt where one exists (with its `prompt_id`), and counts of prompts per reason
    plus the candidates left out: unscored (no parsed judgement) and truncated."""
    pairs = []
    counts = {"prompts": len(groups), **{reason: 0 for reason in PAIR_REASONS},
              "candidates": 0, "unscored_candidates": 0, "truncated_candidates": 0}
    for prompt_id, candidates in groups.items():
        pair, reason = build_pair(candidates, length_control)
        counts[reason] += 1
        counts["candidates"] += len(candidates)
        counts["unscored_candidates"] += sum(c["mean_score"] is None for c in candidates)
        counts["truncated_candidates"] += sum(bool(c["truncated"]) for c in candidates)
        if pair is not None:
            pairs.append({"prompt_id": prompt_id, **pair})
    return pairs, counts


# --- judge accuracy against a rule-checked truth -------------------------------------------------

def round_half_up(value: float) -> int:
    """2.5 -> 3 (Python's round gives 2): a judge mean on the 1/2 grid rounds the same way up and down."""
    return math.floor(value + 0.5)


def average_ranks(values: list[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """None with fewer than 2 points or a constant variable (the correlation is undefined)."""
    if len(xs) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def spearman(xs: list[float], ys: list[float]) -> float | None:
    return pearson(average_ranks(xs), average_ranks(ys))


def kendall_tau_b(xs: list[float], ys: list[float]) -> float | None:
    """(concordant - discordant) / sqrt((n0 - ties_x)(n0 - ties_y)); O(n^2), fine for eval sets."""
    concordant = discordant = ties_x = ties_y = 0
    for i, j in combinations(range(len(xs)), 2):
        dx, dy = xs[i] - xs[j], ys[i] - ys[j]
        ties_x += dx == 0
        ties_y += dy == 0
        if dx * dy > 0:
            concordant += 1
        elif dx * dy < 0:
            discordant += 1
    n0 = len(xs) * (len(xs) - 1) // 2
    denominator = math.sqrt((n0 - ties_x) * (n0 - ties_y))
    return (concordant - discordant) / denominator if denominator > 0 else None


def _truth_pairs(truths: list[float]) -> list[tuple[int, int, bool]]:
    """Index pairs (i, j, truth_i > truth_j) of one group whose true scores differ."""
    return [(i, j, truths[i] > truths[j]) for i, j in combinations(range(len(truths)), 2) if truths[i] != truths[j]]


def _pairwise_figures(correct: int, wrong: int, ties: int) -> dict:
    decided, n = correct + wrong, correct + wrong + ties
    return {"pairwise_accuracy": correct / decided if decided else None, "n_decided": decided,
            "judge_ties": ties, "judge_tie_rate": ties / n if n else None,
            "pairwise_ties_half": (correct + 0.5 * ties) / n if n else None, "n_pairs": n}


def _pairwise_counts(judges: list[list[float]], pairs: list[list[tuple[int, int, bool]]]) -> tuple[int, int, int]:
    """(correct, wrong, judge ties) over each group's truth pairs, judge scores by position."""
    correct = wrong = ties = 0
    for scores, group_pairs in zip(judges, pairs):
        for i, j, truly_higher in group_pairs:
            if scores[i] == scores[j]:
                ties += 1
            elif (scores[i] > scores[j]) == truly_higher:
                correct += 1
            else:
                wrong += 1
    return correct, wrong, ties


def _mean_defined(values: list) -> float | None:
    defined = [v for v in values if v is not None]
    return statistics.fmean(defined) if defined else None


def _judge_chance(parsed_groups: list[list[dict]], permutations: int, seed: int) -> dict:
    """The judge figures with its scores shuffled within each group (see "Chance levels" above).

    A shuffle moves a candidate's score together with its rank among all parsed scores (the
    multiset of scores does not change, so neither do the ranks), so Spearman is O(n) per shuffle.
    Kendall's O(n^2) has no chance level."""
    judges = [[float(c["mean_score"]) for c in g] for g in parsed_groups]
    truths = [[float(c["true_score"]) for c in g] for g in parsed_groups]
    pairs = [_truth_pairs(t) for t in truths]
    flat_ranks = average_ranks([j for g in judges for j in g])
    ranks, k = [], 0
    for g in judges:
        ranks.append(flat_ranks[k:k + len(g)])
        k += len(g)
    truth_ranks = average_ranks([t for g in truths for t in g])
    rounded = [[round_half_up(j) for j in g] for g in judges]
    n = len(truth_ranks)
    rng = random.Random(seed)
    figures = {key: [] for key in ("pairwise_accuracy", "pairwise_ties_half", "judge_tie_rate",
                                   "exact_agreement", "spearman")}
    for _ in range(permutations):
        orders = []
        for g in judges:
            order = list(range(len(g)))
            rng.shuffle(order)
            orders.append(order)
        shuffled = [[g[i] for i in order] for g, order in zip(judges, orders)]
        pairwise = _pairwise_figures(*_pairwise_counts(shuffled, pairs))
        for key in ("pairwise_accuracy", "pairwise_ties_half", "judge_tie_rate"):
            figures[key].append(pairwise[key])
        hits = sum(r[i] == t for r, ts, order in zip(rounded, truths, orders) for i, t in zip(order, ts))
        figures["exact_agreement"].append(hits / n if n else None)
        figures["spearman"].append(pearson([r[i] for r, order in zip(ranks, orders) for i in order], truth_ranks))
    return {**{key: _mean_defined(values) for key, values in figures.items()}, "permutations": permutations}


def judge_agreement(groups: dict, permutations: int = CHANCE_PERMUTATIONS, seed: int = CHANCE_SEED) -> dict:
    """How well the judge's scores (`mean_score`, any real number, None when unparsed) follow
    `true_score` (0..5) per candidate, over prompt groups, each figure with its chance level.

    Pairs are same-prompt pairs with different true scores and both scores parsed (the rules are in
    the module docstring); the correlations and exact agreement pool every parsed candidate.
    Judgement-level failure counts are summed from `n_judgements` / `n_no_score` / `n_out_of_range`
    where candidates carry them (the keys of `aggregate`). `chance`: `pairwise_accuracy`,
    `pairwise_ties_half`, `judge_tie_rate`, `exact_agreement`, `spearman` of the same judge with its
    scores shuffled within each prompt, over `permutations` shuffles seeded with `seed`.
    """
    everyone = [c for candidates in groups.values() for c in candidates]
    parsed_groups = [[c for c in candidates if c["mean_score"] is not None] for candidates in groups.values()]
    parsed = [c for g in parsed_groups for c in g]
    judge = [float(c["mean_score"]) for c in parsed]
    truth = [float(c["true_score"]) for c in parsed]
    counts = _pairwise_counts([[float(c["mean_score"]) for c in g] for g in parsed_groups],
                              [_truth_pairs([c["true_score"] for c in g]) for g in parsed_groups])
    all_truth_pairs = sum(len(_truth_pairs([c["true_score"] for c in cs])) for cs in groups.values())
    out = {"n_candidates": len(everyone), "n_scored": len(parsed), **_pairwise_figures(*counts),
           "n_pairs_unscored": all_truth_pairs - sum(counts),  # a pair with an unparsed score
           "exact_agreement": (sum(round_half_up(c["mean_score"]) == c["true_score"] for c in parsed)
                               / len(parsed) if parsed else None),
           "spearman": spearman(judge, truth), "kendall_tau_b": kendall_tau_b(judge, truth),
           "parse_failure_rate": (len(everyone) - len(parsed)) / len(everyone) if everyone else None,
           "chance": _judge_chance(parsed_groups, permutations, seed),
           "finished": finished_agreement(groups, permutations, seed)}
    with_counts = [c for c in everyone if "n_judgements" in c]
    if with_counts:
        n = sum(c["n_judgements"] for c in with_counts)
        failed = sum(c.get("n_no_score", 0) + c.get("n_out_of_range", 0) for c in with_counts)
        out.update({"n_judgements": n, "judgement_failure_rate": failed / n if n else None,
                    "n_no_score": sum(c.get("n_no_score", 0) for c in with_counts),
                    "n_out_of_range": sum(c.get("n_out_of_range", 0) for c in with_counts)})
    return out


def finished_agreement(groups: dict, permutations: int = CHANCE_PERMUTATIONS, seed: int = CHANCE_SEED) -> dict:
    """`judge_agreement`'s pairwise figures over the finished replies only (`truncated` false or absent),
    each with its chance level: the judge's skill where a round's pairs need it, since a cut-off reply
    is never chosen. A judge that only tells cut-off replies from finished ones scores above chance
    over all candidates and at chance here."""
    finished = [[c for c in candidates if not c.get("truncated") and c["mean_score"] is not None]
                for candidates in groups.values()]
    counts = _pairwise_counts([[float(c["mean_score"]) for c in g] for g in finished],
                              [_truth_pairs([c["true_score"] for c in g]) for g in finished])
    chance = _judge_chance(finished, permutations, seed)
    return {"n_candidates": sum(len(g) for g in finished), **_pairwise_figures(*counts),
            "chance": {key: chance[key] for key in ("pairwise_accuracy", "pairwise_ties_half", "judge_tie_rate")}}


def pair_precision(pairs: list[dict], true_score_by_id: dict) -> dict:
    """The pairs split by their true scores (label noise, notes 4.2): `right` (chosen truly higher),
    `equal_truth`, `wrong`; `precision` = right / n_pairs, `precision_decided` = right / (right + wrong),
    `equal_truth_rate` = equal_truth / n_pairs (None where the denominator is 0)."""
    missing = [i for p in pairs for i in (p["chosen_id"], p["rejected_id"]) if i not in true_score_by_id]
    if missing:
        raise ValueError(f"pair_precision: no true score for candidate {missing[0]!r}")
    right = equal = wrong = 0
    for p in pairs:
        chosen, rejected = true_score_by_id[p["chosen_id"]], true_score_by_id[p["rejected_id"]]
        right += chosen > rejected
        equal += chosen == rejected
        wrong += chosen < rejected
    n = len(pairs)
    return {"n_pairs": n, "right": right, "equal_truth": equal, "wrong": wrong,
            "precision": right / n if n else None,
            "precision_decided": right / (right + wrong) if right + wrong else None,
            "equal_truth_rate": equal / n if n else None}


def pair_precision_chance(groups: dict, length_control: float = 0.0, permutations: int = CHANCE_PERMUTATIONS,
                          seed: int = CHANCE_SEED) -> dict:
    """`pair_precision` of the pairs `build_pairs` makes when the judge's `mean_score`s are shuffled
    among the parsed candidates of each prompt (`truncated`, `response`, `true_score` stay with their
    candidate), averaged over `permutations` shuffles seeded with `seed`: `precision`,
    `precision_decided`, `equal_truth_rate` (each over the shuffles where it is defined) and `pairs`
    (the mean number of pairs). `groups` as `self_rewarding.scored_groups` gives them."""
    truth = {c["id"]: c["true_score"] for candidates in groups.values() for c in candidates}
    rng = random.Random(seed)
    figures = {key: [] for key in ("precision", "precision_decided", "equal_truth_rate", "pairs")}
    for _ in range(permutations):
        shuffled = {}
        for prompt_id, candidates in groups.items():
            scores = [c["mean_score"] for c in candidates if c["mean_score"] is not None]
            rng.shuffle(scores)
            deal = iter(scores)
            shuffled[prompt_id] = [c if c["mean_score"] is None else {**c, "mean_score": next(deal)}
                                   for c in candidates]
        split = pair_precision(build_pairs(shuffled, length_control)[0], truth)
        for key in ("precision", "precision_decided", "equal_truth_rate"):
            figures[key].append(split[key])
        figures["pairs"].append(split["n_pairs"])
    return {**{key: _mean_defined(values) for key, values in figures.items()}, "permutations": permutations}


def score_histogram(values: list[float | None]) -> dict[str, int]:
    """Counts of judge scores rounded half up, keys "0".."5" always present, and "none" (unparsed).

    A judge that gives 5 to everything shows here first (lucidrains #7, NeMo's meta-judge note).
    """
    histogram = {str(s): 0 for s in range(MIN_SCORE, MAX_SCORE + 1)} | {"none": 0}
    for value in values:
        key = "none" if value is None else str(round_half_up(value))
        if key not in histogram:
            raise ValueError(f"score_histogram: {value} is outside {MIN_SCORE}..{MAX_SCORE}")
        histogram[key] += 1
    return histogram


def length_stats(pairs: list[dict], response_by_id: dict) -> dict:
    """Mean characters of chosen and rejected replies, and the share of pairs whose chosen is longer
    (length drift: 1,092 -> 2,552 characters over the paper's iterations, §3.2.1)."""
    chosen = [len(response_by_id[p["chosen_id"]]) for p in pairs]
    rejected = [len(response_by_id[p["rejected_id"]]) for p in pairs]
    return {"n_pairs": len(pairs),
            "mean_chosen_chars": statistics.fmean(chosen) if pairs else None,
            "mean_rejected_chars": statistics.fmean(rejected) if pairs else None,
            "chosen_longer_rate": sum(c > r for c, r in zip(chosen, rejected)) / len(pairs) if pairs else None}
