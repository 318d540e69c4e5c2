"""Per-iteration table (markdown) and plot (PNG) of a run folder.

    python -m selftrain.report results/demo
    python -m selftrain.report --compare results/self_rewarding results/iterative_dpo   # two loops side by side

Reads only the stage markers, so it works on a run that is still going. It
shows whatever stages a run has (every `iter_NN/*.done`, whatever the method):
the progress table leaves out the columns no iteration has, and a third table
gives each stage's minutes and the generation backend that wrote its replies.
The same figures go to the config's trackers (`report_to`), one point per
iteration, as each iteration's evaluation finishes (`track_round`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from selftrain import tracking
from selftrain.config import Config
from selftrain.errors import InputError
from selftrain.report_distill import distill_metrics, distill_tables, plot_distill

COLUMNS = ["iter", "samples", "stage-1 solve rate", "rationalized", "train examples", "train loss",
           "accuracy", "eval reward", "per difficulty", "reply tokens", "answer line", "minutes", "peak GiB"]
# round metrics of the generated samples (seed 000 "Monitor Training") and signs of reward hacking
ROUND_COLUMNS = ["iter", "mean reward", "median reward", "reward per difficulty / category", "kept", "kept %",
                 "kept per class", "reply chars", "distinct-2", "duplicate rate", "no answer"]


def collect(run_dir: Path) -> list[dict]:
    rows = []
    for directory in sorted(run_dir.glob("iter_[0-9][0-9]")):
        n = int(directory.name.split("_")[1])
        # shards of a stage are counted in its merged marker, not again as stages of their own
        markers = {p.name.removesuffix(".done"): json.loads(p.read_text()) for p in directory.glob("*.done")
                   if "-shard-" not in p.name}
        if not markers:
            continue
        markers = dict(sorted(markers.items(), key=lambda kv: kv[1].get("finished_at", "")))  # in the order run
        m = {s: v.get("metrics", {}) for s, v in markers.items()}
        seconds = sum(float(v.get("wall_seconds", 0) or 0) for v in m.values())
        m = {s: m.get(s, {}) for s in ("samples", "judged", "rationales", "train", "model", "eval")} | m
        rows.append({
            "iter": n,
            "stages": {s: {"minutes": round(float(v.get("wall_seconds", 0) or 0) / 60, 1),
                           "backend": v["backend"].get("backend") if isinstance(v.get("backend"), dict) else None,
                           "finished_at": markers[s].get("finished_at", "")}
                       for s, v in ((s, markers[s].get("metrics", {})) for s in markers)},
            "samples": m["judged"].get("samples"),
            "solve_rate": m["judged"].get("solve_rate"),
            "rationalized": m["rationales"].get("kept"),
            "train_examples": m["train"].get("train_examples"),
            "train_loss": m["model"].get("train_loss"),
            "accuracy": m["eval"].get("accuracy"),
            # accuracy for rewards that decide correctness, the mean reward for score-only ones
            "per_difficulty": {d: v.get("accuracy", v.get("mean_reward"))
                               for d, v in m["eval"].get("per_difficulty", {}).items()},
            "reply_tokens": m["eval"].get("mean_response_tokens"),
            "answer_line": m["eval"].get("answer_line_rate"),
            "minutes": round(seconds / 60, 1) if seconds else None,
            "peak_gib": max((float(v.get("peak_rss_gib", 0) or 0) for v in m.values()), default=None) or None,
            "loss_history": m["model"].get("loss_history", []),
            "eval_reward": m["eval"].get("mean_reward"),
            "round": _round_metrics(m["judged"], m["train"]),
            "self_rewarding": _self_rewarding_metrics(m),
            "distill": distill_metrics(m),
        })
    return rows


NOT_ROUND_METRICS = ("iter", "stages", "loss_history")  # the step itself, stage timings, the trainer's own curve


def round_scalars(row: dict) -> dict[str, float]:
    """Every number of one iteration's row (`collect`) by its path in the row: "accuracy", "train_loss",
    "round/kept", "self_rewarding/pair_precision", "distill/variants/b/accuracy", ...; figures a marker
    lacks (None) are left out."""
    scalars: dict[str, float] = {}

    def walk(value, path: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}/{key}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            scalars[path] = value

    for key, value in row.items():
        if key not in NOT_ROUND_METRICS:
            walk(value, key)
    return scalars


def track_round(config: Config, run_dir, iteration: int) -> None:
    """Log iteration N's figures (`round_scalars`) to the trackers of `report_to`, at step N.

    The evaluation stages call it once they have written the iteration's eval marker: the last stage of
    every method's chain (what `make iter` aims at), so all of the iteration's figures are in, and the
    curves grow while the run goes. A rerun finds the marker and logs nothing twice; `make report`
    logs nothing (it may run again at any time)."""
    if not tracking.enabled(config):
        return
    row = next(r for r in collect(Path(run_dir)) if r["iter"] == iteration)
    tracking.log_round(config, run_dir, iteration, round_scalars(row))


IFEVAL = ("prompt_level_strict", "instruction_level_strict", "prompt_level_loose", "instruction_level_loose")
SELF_REWARDING_COLUMNS = ["iter", "IFEval prompt strict", "inst strict", "prompt loose", "inst loose",
                          "reply chars", "pairs", "tie rate", "pair precision, truths differ (chance)",
                          "pairs equal truth (chance)", "pair precision, all pairs (chance)",
                          "chosen / rejected chars", "DPO margin", "DPO acc"]
JUDGE_COLUMNS = ["judge", "parse fail", "pairs decided / all", "acc, decided pairs (chance)", "judge ties (chance)",
                 "exact (chance)", "Spearman (chance)", "finished replies: decided", "acc (chance)"]


def _self_rewarding_metrics(m: dict) -> dict:
    """IFEval accuracies (eval), the judge's accuracy on the judge set (judge_eval), the pairs and DPO.

    Each judge figure comes with its chance level (`*_chance`, None in markers written before there
    was one). Markers without `n_decided` counted judge ties as wrong pairs: their pairwise figure is
    not the accuracy on decided pairs and is left out."""
    judge = m.get("judge_eval", {}).get("judge", {})
    decided = "n_decided" in judge
    judge_chance = judge.get("chance") or {}
    finished = judge.get("finished") or {}
    pairs = m.get("pairs", {})
    split, pairs_chance = pairs.get("pair_precision_split") or {}, pairs.get("pair_precision_chance") or {}
    return {**{k: m["eval"].get(k) for k in IFEVAL}, "reply_chars": m["eval"].get("mean_response_chars"),
            "judge_pairwise": judge.get("pairwise_accuracy") if decided else None,
            "judge_pairwise_chance": judge_chance.get("pairwise_accuracy"),
            "judge_decided": judge.get("n_decided"), "judge_pairs": judge.get("n_pairs") if decided else None,
            "judge_tie_rate": judge.get("judge_tie_rate"), "judge_tie_rate_chance": judge_chance.get("judge_tie_rate"),
            "judge_exact": judge.get("exact_agreement"), "judge_exact_chance": judge_chance.get("exact_agreement"),
            "judge_spearman": judge.get("spearman"), "judge_spearman_chance": judge_chance.get("spearman"),
            "judge_parse_fail": m.get("judge_eval", {}).get("parse_failure_rate"),
            "judge_finished_decided": finished.get("n_decided"), "judge_finished": finished.get("pairwise_accuracy"),
            "judge_finished_chance": (finished.get("chance") or {}).get("pairwise_accuracy"),
            "pairs": pairs.get("pairs"), "tie_rate": pairs.get("tie_rate"),
            "pair_precision": pairs.get("pair_precision"), "pair_precision_chance": pairs_chance.get("precision"),
            "pair_precision_decided": split.get("precision_decided"),
            "pair_precision_decided_chance": pairs_chance.get("precision_decided"),
            "pairs_equal_truth": split.get("equal_truth_rate"),
            "pairs_equal_truth_chance": pairs_chance.get("equal_truth_rate"),
            "chosen_chars": pairs.get("mean_chosen_chars"), "rejected_chars": pairs.get("mean_rejected_chars"),
            "dpo_margin": m["model"].get("final_rewards_margins"),
            "dpo_accuracy": m["model"].get("final_rewards_accuracies")}


def _with_chance(g: dict, key: str, pct: bool = True) -> str:
    """"52.0% (50.0%)": the figure and its chance level; "-" for either one the marker lacks."""
    if g[key] is None:
        return "-"
    chance = g[key + "_chance"]
    if pct:
        return f"{_fmt(g[key], True)} ({_fmt(chance, True)})"
    return f"{g[key]:+.2f} ({'-' if chance is None else f'{chance:+.2f}'})"


def self_rewarding_table(rows: list[dict]) -> list[str]:
    """The Self-Rewarding tables (M0..Mn): the models and their pairs, then the judges; nothing when
    no iteration has IFEval accuracies."""
    if not any(r["self_rewarding"]["prompt_level_strict"] is not None for r in rows):
        return []
    table, judges = [], []
    for r in rows:
        g = r["self_rewarding"]
        lengths = "-" if g["chosen_chars"] is None else f"{g['chosen_chars']:.0f} / {g['rejected_chars']:.0f}"
        table.append([f"M{r['iter']}"] + [_fmt(g[k], True) for k in IFEVAL] + [_fmt(g["reply_chars"])]
                     + [_fmt(g["pairs"]), _fmt(g["tie_rate"], True)]
                     + [_with_chance(g, k) for k in ("pair_precision_decided", "pairs_equal_truth", "pair_precision")]
                     + [lengths, _fmt(g["dpo_margin"]), _fmt(g["dpo_accuracy"], True)])
        if any(g[k] is not None for k in ("judge_parse_fail", "judge_exact", "judge_tie_rate")):
            counts = "-" if g["judge_pairs"] is None else f"{g['judge_decided']} / {g['judge_pairs']}"
            judges.append([f"M{r['iter']}", _fmt(g["judge_parse_fail"], True), counts]
                          + [_with_chance(g, k) for k in ("judge_pairwise", "judge_tie_rate", "judge_exact")]
                          + [_with_chance(g, "judge_spearman", pct=False), _fmt(g["judge_finished_decided"]),
                             _with_chance(g, "judge_finished")])
    lines = ["", "Self-Rewarding / iterative DPO: held-out IFEval accuracies (greedy), and the pairs each model was "
             "trained on (iteration t's pairs come from M_{t-1}'s judgements, or with iterative DPO from the reward's "
             "scores of its candidates) against the rule-checked truth: the share of "
             "pairs whose chosen reply truly scores higher, among pairs whose true scores differ and among all; "
             "the share whose two replies are truly equal. In brackets the chance level: the same figure for the "
             "pairs rebuilt from the judge's scores shuffled among the candidates of each prompt (averaged over "
             "seeded shuffles; '-': not in the marker):", ""]
    lines += _table(SELF_REWARDING_COLUMNS, table)
    if judges:
        lines += ["", "Each model as a judge, against the rule-checked truth on the judge set: over same-prompt "
                  "pairs whose true scores differ, the accuracy on the pairs it decides (its two scores differ) and "
                  "the share it ties; exact-score agreement and Spearman over every parsed candidate; then the decided "
                  "pairs and the accuracy among the replies that were not cut off (a round's pairs choose among "
                  "those: a cut-off reply is never chosen). In brackets "
                  "the chance level: the same figure with the judge's scores shuffled among the candidates of each "
                  "prompt; a judge that ignores the reply lands there, not at 50% or 0:", ""]
        lines += _table(JUDGE_COLUMNS, judges)
    return lines


def _round_metrics(judged: dict, train: dict) -> dict:
    groups = {}
    for key in ("per_difficulty", "per_category", "per_dataset"):
        for name, stats in judged.get(key, {}).items():
            groups[name] = stats.get("mean_reward")
    # the balancing class if one was set, else category, dataset or difficulty
    keys = [f"kept_per_{train['balance_by']}"] if train.get("balance_by") else []
    classes = next((train[k] for k in keys + ["kept_per_category", "kept_per_dataset", "kept_per_difficulty"]
                    if k in train), {})
    return {"mean_reward": judged.get("mean_reward"), "median_reward": judged.get("median_reward"),
            "groups": groups, "kept": train.get("train_examples"), "kept_percent": train.get("kept_percent"),
            "classes": classes, "reply_chars": judged.get("mean_response_chars"),
            "distinct_2": judged.get("distinct_2"), "duplicate_rate": judged.get("duplicate_rate"),
            "no_answer_rate": judged.get("no_answer_rate")}


def _fmt(value, pct=False) -> str:
    if value is None:
        return "-"
    if pct:
        return f"{100 * value:.1f}%"
    return str(value)


def markdown(rows: list[dict]) -> str:
    table = []
    for r in rows:
        per = ", ".join(f"{d} {100 * a:.0f}%" if r["accuracy"] is not None else f"{d} {a:.3g}"
                        for d, a in r["per_difficulty"].items() if a is not None) or "-"
        table.append([str(r["iter"]), _fmt(r["samples"]), _fmt(r["solve_rate"], True), _fmt(r["rationalized"]),
                      _fmt(r["train_examples"]), _fmt(r["train_loss"]), _fmt(r["accuracy"], True),
                      _fmt(r["eval_reward"]), per,
                      _fmt(r["reply_tokens"]), _fmt(r["answer_line"], True), _fmt(r["minutes"]), _fmt(r["peak_gib"])])
    keep = [i for i in range(len(COLUMNS)) if i == 0 or any(cells[i] != "-" for cells in table)]
    lines = _table([COLUMNS[i] for i in keep], [[cells[i] for i in keep] for cells in table])
    lines += ["", "Round metrics of the generated samples, and signs of reward hacking (length, diversity, "
              "duplicates, missing answers):", ""]
    round_rows = []
    for r in rows:
        g = r["round"]
        if g["mean_reward"] is None:
            continue
        groups = ", ".join(f"{k} {v:.2f}" for k, v in g["groups"].items() if v is not None) or "-"
        classes = ", ".join(f"{k} {v}" for k, v in g["classes"].items()) or "-"
        round_rows.append([str(r["iter"]), _fmt(g["mean_reward"]), _fmt(g["median_reward"]), groups, _fmt(g["kept"]),
                           _fmt(g["kept_percent"]), classes, _fmt(g["reply_chars"]), _fmt(g["distinct_2"]),
                           _fmt(g["duplicate_rate"], True), _fmt(g["no_answer_rate"], True)])
    lines += _table(ROUND_COLUMNS, round_rows)
    lines += self_rewarding_table(rows)
    lines += distill_tables(rows, _table)
    # columns in the order the stages ran (iteration 0 has only its evaluation)
    first = {}
    for r in rows:
        for s, v in r["stages"].items():
            first[s] = min(first.get(s, v["finished_at"]), v["finished_at"])
    stages = sorted(first, key=lambda s: (s == "eval", first[s]))
    lines += ["", "Stages of each iteration (minutes; the generation backend where one wrote replies):", ""]
    lines += _table(["iter"] + stages, [[str(r["iter"])] + [_stage_cell(r["stages"].get(s)) for s in stages]
                                        for r in rows])
    return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(c) + " |" for c in rows]


def _stage_cell(stage: dict | None) -> str:
    if stage is None:
        return "-"
    return f"{stage['minutes']}" + (f" ({stage['backend']})" if stage["backend"] else "")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sr = [r for r in rows if r["self_rewarding"]["prompt_level_strict"] is not None]
    distill = any(r["distill"] and r["distill"]["accuracy"] is not None for r in rows)
    fig, axes = plt.subplots(1, 4 if sr or distill else 3, figsize=(20 if sr or distill else 15, 4))
    left, right, signals = axes[:3]
    if sr:
        _plot_self_rewarding(axes[3], sr)
    elif distill:
        plot_distill(axes[3], rows)
    if any(r["accuracy"] is not None for r in rows):  # rewards that decide correctness: percentages
        its = [r["iter"] for r in rows if r["accuracy"] is not None]
        left.plot(its, [100 * r["accuracy"] for r in rows if r["accuracy"] is not None], "o-",
                  label="held-out accuracy")
        rewards = [(r["iter"], 100 * r["round"]["mean_reward"]) for r in rows if r["round"]["mean_reward"] is not None]
        if rewards:
            left.plot(*zip(*rewards), "^:", label="mean sample reward x100")
        solve = [(r["iter"], 100 * r["solve_rate"]) for r in rows if r["solve_rate"] is not None]
        if solve:
            left.plot(*zip(*solve), "s--", label="stage-1 solve rate")
        left.set_ylabel("%")
        left.set_ylim(0, 100)
        left.set_title("accuracy per iteration")
    else:  # score-only rewards (reward model, API, script): the scores themselves
        its = [r["iter"] for r in rows if r["eval_reward"] is not None]
        left.plot(its, [r["eval_reward"] for r in rows if r["eval_reward"] is not None], "o-",
                  label="held-out mean reward")
        rewards = [(r["iter"], r["round"]["mean_reward"]) for r in rows if r["round"]["mean_reward"] is not None]
        if rewards:
            left.plot(*zip(*rewards), "^:", label="mean sample reward")
        left.set_ylabel("reward")
        left.set_title("reward per iteration")
    left.set_xlabel("iteration")
    left.set_xticks(its or [0])
    left.legend()
    for r in rows:
        if r["loss_history"]:
            right.plot(range(1, len(r["loss_history"]) + 1), r["loss_history"], label=f"iter {r['iter']}")
    right.set_xlabel("step")
    right.set_ylabel("training loss")
    right.set_title("training loss")
    if any(r["loss_history"] for r in rows):
        right.legend()
    judged_rows = [r for r in rows if r["round"]["mean_reward"] is not None]
    for key, label in (("distinct_2", "distinct-2"), ("duplicate_rate", "duplicate rate"),
                       ("no_answer_rate", "no-answer rate")):
        points = [(r["iter"], r["round"][key]) for r in judged_rows if r["round"][key] is not None]
        if points:
            signals.plot(*zip(*points), "o-", label=label)
    signals.set_ylim(0, 1)
    signals.set_xlabel("iteration")
    signals.set_title("reward-hacking signals (samples)")
    chars = [(r["iter"], r["round"]["reply_chars"]) for r in judged_rows if r["round"]["reply_chars"] is not None]
    if chars:
        length = signals.twinx()
        length.plot(*zip(*chars), "k--", label="reply chars")
        length.set_ylabel("mean reply characters")
        length.legend(loc="upper right")
    if judged_rows:
        signals.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_self_rewarding(axis, rows: list[dict]) -> None:
    its = [r["iter"] for r in rows]
    for key, label, style in (("prompt_level_strict", "IFEval prompt strict", "o-"),
                              ("instruction_level_strict", "IFEval instruction strict", "o--"),
                              ("judge_pairwise", "judge accuracy, decided pairs", "s-"),
                              ("pair_precision_decided", "pair precision, truths differ", "^-")):
        points = [(i, 100 * r["self_rewarding"][key]) for i, r in zip(its, rows)
                  if r["self_rewarding"][key] is not None]
        if not points:
            continue
        (line,) = axis.plot(*zip(*points), style, label=label)
        chance = [(i, 100 * r["self_rewarding"][key + "_chance"]) for i, r in zip(its, rows)
                  if r["self_rewarding"].get(key + "_chance") is not None]
        if chance:  # the same judge with its scores shuffled within each prompt
            axis.plot(*zip(*chance), ":", color=line.get_color(), alpha=0.7, label=f"{label}: chance")
    axis.set_ylim(0, 100)
    axis.set_xticks(its)
    axis.set_xlabel("model M_t")
    axis.set_ylabel("%")
    axis.set_title("Self-Rewarding: instruction following and the judge")
    axis.legend(loc="upper left", fontsize="small")
    chars = [(i, r["self_rewarding"]["reply_chars"]) for i, r in zip(its, rows)
             if r["self_rewarding"]["reply_chars"] is not None]
    if chars:
        length = axis.twinx()
        length.plot(*zip(*chars), "k--", label="reply chars (held-out)")
        length.set_ylabel("mean reply characters")
        length.legend(loc="upper right", fontsize="small")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--compare"]:
        if len(argv) != 3:
            raise InputError("usage: python -m selftrain.report --compare RUN_A RUN_B")
        print(compare_runs(Path(argv[1]), Path(argv[2])))
        return
    if len(argv) != 1:
        raise InputError("usage: python -m selftrain.report RUN_DIR | --compare RUN_A RUN_B")
    run_dir = Path(argv[0])
    rows = collect(run_dir) if run_dir.is_dir() else []
    if not rows:
        raise InputError(f"{run_dir}: no finished stages to report (run `make iter` first)")
    table = markdown(rows)
    (run_dir / "report.md").write_text(f"# {run_dir.name}\n\n{table}")
    plot(rows, run_dir / "report.png")
    print(table)
    print(f"written: {run_dir / 'report.md'}, {run_dir / 'report.png'}")


# --- two loops side by side (make demo-iterative-dpo) ---------------------------------------------------

COMPARE_COLUMNS = (("IFEval prompt strict", "prompt_level_strict"), ("inst strict", "instruction_level_strict"),
                   ("pairs", "pairs"), ("pair precision (chance)", "pair_precision"), ("reply chars", "reply_chars"))


def base_offset(run_a: Path, run_b: Path) -> int:
    """N when run_b's base model (the model its iteration 0 evaluated) is run_a's iteration-N model, so that
    run_b's iteration t stands beside run_a's t + N; else 0."""
    marker = run_b / "iter_00" / "eval.done"
    model = json.loads(marker.read_text()).get("model") if marker.is_file() else None
    for directory in sorted(run_a.glob("iter_[0-9][0-9]")) if model else ():
        if (directory / "model").resolve() == Path(model).resolve():
            return int(directory.name.split("_")[1])
    return 0


def _compare_cell(g: dict | None, key: str) -> str:
    if g is None:
        return "-"
    if key == "pair_precision":
        return _with_chance(g, key)
    if key == "reply_chars":
        return "-" if g[key] is None else f"{g[key]:.0f}"
    return _fmt(g[key], key != "pairs")


def compare_runs(run_a: Path, run_b: Path) -> str:
    """Two runs' models side by side in one markdown table, run_b's aligned on its base model (`base_offset`):
    per model M_k, each run's held-out IFEval strict accuracies and mean reply characters, and the pairs M_k
    was trained on with their precision against the rule-checked truth (chance in brackets)."""
    offset = base_offset(run_a, run_b)
    loops = []
    for run, shift in ((run_a, 0), (run_b, offset)):
        rows = {r["iter"] + shift: r["self_rewarding"] for r in (collect(run) if run.is_dir() else [])}
        if not rows:
            raise InputError(f"{run}: no finished stages to compare (run it first)")
        loops.append(rows)
    header = ["model"] + [f"{label}, {run.name}" for label, _ in COMPARE_COLUMNS for run in (run_a, run_b)]
    table = [[f"M{k}"] + [_compare_cell(rows.get(k), key) for _, key in COMPARE_COLUMNS for rows in loops]
             for k in sorted(set(loops[0]) | set(loops[1]))]
    aligned = (f" {run_b.name} starts from {run_a.name}'s M{offset}: its iteration t is the row M(t+{offset}) "
               f"(its iteration 0 evaluates that M{offset} again)." if offset else "")
    return "\n".join([f"{run_a.name} and {run_b.name} side by side: each model's held-out IFEval accuracies (greedy, "
                      f"strict) and mean reply characters, and the pairs it was trained on (made from the previous "
                      f"model's candidates) with their precision, the share whose chosen reply truly scores higher "
                      f"on the rule-checked 0..5 truth (in brackets its chance level: the same scores shuffled "
                      f"among each prompt's candidates); '-': not run, or not measured.{aligned}", ""]
                     + _table(header, table)) + "\n"


if __name__ == "__main__":
    from selftrain.cli import run

    run(main)
