"""The distillation tables and plot panel of `make report` (method distill, seed 003).

One table of every model (iteration 0 base, 1 Track A, 2 Track B, 3.. Phase C rounds) on every prompt
variant: held-out accuracy and the predicted-"yes" share, so whether the reasoning helps reads from it
(Track B's prompt against the question alone, the draft removed or another question's). Then each
model on the prompt it was trained on, per true class (a model that says "No" to everything shows as
no 100%); the teacher's agreement and the yes/no ratio of every data set from the questions sent to
what each phase trained on; each Phase C round's samples and pairs and its DPO schedule; and the
seed's "Project Goals vs Actual Results" table with its targets (absolute ones are StrategyQA's with
Phi-3.5; the relative ones apply), its validation checks included: the integrated-gradients share on the
draft's tokens (attribution.done) and the question-quality win-rate (question_quality.done), read from
their markers, each beside what no learning would give (the draft's share of the prompt's tokens, chance).
"""
from __future__ import annotations

from selftrain.distill import FIRST_ROUND
from selftrain.question_quality import SEED_CRITERION

PHASES = {0: "base (M0)", 1: "Track A", 2: "Track B"}
ATTRIBUTION_TARGET = 0.20  # seed 003: "Integrated-gradients mass on draft tokens, >= 20% after DPO"
NOT_RUN = "not run (make distill-checks)"
PROMPTS = {"a": "question", "b": "question + draft"}
VARIANTS = {"a": "a: question", "b": "b: question + draft", "no_draft": "no draft (b's prompt without it)",
            "shuffled": "shuffled (another question's draft)"}


def phase(n: int) -> str:
    return PHASES.get(n) or f"Phase C round {n - FIRST_ROUND + 1} (DPO)"


def _variant(ev: dict) -> dict:
    return {"accuracy": ev.get("accuracy"), "predicted_yes": ev.get("predicted_yes"), "unclear": ev.get("unclear")}


def distill_metrics(m: dict) -> dict:
    """What one iteration's markers say about distillation (empty when it has none of its stages)."""
    ev = m.get("eval", {})
    if "variant" not in ev and not any(s in m for s in ("drafts", "validated", "track_a", "track_b")):
        return {}
    variants = {v: _variant(m[f"eval_{v}"]) for v in VARIANTS if f"eval_{v}" in m}
    if ev.get("variant"):
        variants[ev["variant"]] = _variant(ev)
    return {"variant": ev.get("variant"), "accuracy": ev.get("accuracy"),
            "per_class": {c: ev.get(f"accuracy_{c}") for c in ("yes", "no")},
            "predicted": {c: ev.get(f"predicted_{c}") for c in ("yes", "no")}, "unclear": ev.get("unclear"),
            "variants": variants, "no_draft": variants.get("no_draft", {}).get("accuracy"),
            "shuffled": variants.get("shuffled", {}).get("accuracy"),
            "drafts": m.get("drafts", {}), "validated": m.get("validated", {}),
            "data": next((m[s] for s in ("track_a", "track_b", "pairs") if s in m), {}),
            "teacher": m.get("teacher", {}), "model": m.get("model", {}),
            "attribution": m.get("attribution"), "question_quality": m.get("question_quality")}


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ratio(classes: dict | None) -> str:
    if not classes:
        return "-"
    total = sum(classes.values()) or 1
    return f"{100 * classes.get('yes', 0) / total:.0f}/{100 * classes.get('no', 0) / total:.0f} (n={total})"


def variant_table(d: dict, table) -> list[str]:
    """A row per model, a column per prompt variant: accuracy / predicted-"yes" share (* the training prompt)."""
    shown = [v for v in VARIANTS if any(v in g["variants"] for g in d.values())]
    body = []
    for n, g in sorted(d.items()):
        if not g["variants"]:
            continue
        cells = [f"{_pct(g['variants'][v]['accuracy'])} / {_pct(g['variants'][v]['predicted_yes'])}"
                 + (" *" if v == g["variant"] else "") if v in g["variants"] else "-" for v in shown]
        body.append([str(n), phase(n)] + cells)
    if not body:
        return []
    return (["", "Distillation: every model on every prompt variant, held-out accuracy / predicted \"yes\" share "
             "(greedy; * the prompt the model was trained on):", ""]
            + table(["iter", "model"] + [VARIANTS[v] for v in shown], body))


def distill_tables(rows: list[dict], table) -> list[str]:
    """Markdown lines: the variant table, the per-class table, the data, Phase C and goals tables (nothing for
    other methods)."""
    d = {r["iter"]: r["distill"] for r in rows if r.get("distill")}
    if not d:
        return []
    lines = variant_table(d, table)
    lines += ["", "Each model on the prompt it was trained on, per true class:", ""]
    body = []
    for n, g in sorted(d.items()):
        if g["accuracy"] is None:
            continue
        pc, pred = g["per_class"], g["predicted"]
        body.append([str(n), phase(n), PROMPTS.get(g["variant"], "-"), _pct(g["accuracy"]), _pct(pc.get("yes")),
                     _pct(pc.get("no")), f"{_pct(pred.get('yes'))} / {_pct(pred.get('no'))}", str(g["unclear"])])
    lines += table(["iter", "model", "prompt", "accuracy", "yes acc", "no acc", "predicted yes / no", "unclear"], body)
    lines += ["", "Teacher and classes (yes/no share, n): the questions sent, what the teacher got right, what each "
              "phase trained on:", ""]
    drafts = d.get(0, {}).get("drafts", {}).get("train", {})
    val = d.get(1, {}).get("validated", {})
    teacher = d.get(1, {}).get("teacher", {})
    data_rows = [["student drafts (train)", _pct(drafts.get("draft_accuracy")), _ratio(drafts.get("truth")), "-"],
                 ["teacher replies", f"{_pct(val.get('teacher_agreement_of_all'))} of all "
                  f"({_pct(val.get('teacher_agreement'))} of parsed)", _ratio(val.get("classes_before")),
                  f"{val.get('unparsable', '-')} unparsable, {teacher.get('prompt_tokens', '-')} + "
                  f"{teacher.get('generated_tokens', '-')} tokens, ${teacher.get('estimated_cost_usd', '-')}"],
                 ["filtered (teacher agrees, has a target)", "-", _ratio(val.get("classes_filtered")),
                  f"draft_analysis: {val.get('draft_analysis', '-')}; {val.get('no_reasoning', '-')} without a "
                  f"reasoning section, {val.get('verdict_lost', '-')} lose the verdict"],
                 ["kept", "-", _ratio(val.get("classes_kept")), f"balance_by: {val.get('balance_by') or 'off'}"]]
    for n, g in sorted(d.items()):
        if n >= 1 and g.get("data"):
            kinds = g["data"].get("rejected_kinds")
            data_rows.append([f"{phase(n)} {'pairs' if n >= FIRST_ROUND else 'data'}", "-",
                              _ratio(g["data"].get("classes")),
                              ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) if kinds else "-"])
    lines += table(["set", "accuracy / agreement", "yes/no", "notes"], data_rows)
    lines += phase_c_tables(d, table)
    lines += ["", "Project Goals vs Actual Results (seed 003's targets; its absolute figures are StrategyQA's):", ""]
    lines += table(["Phase", "Target", "Actual", "Status"], goals(d))
    return lines


def phase_c_tables(d: dict, table) -> list[str]:
    """Each Phase C round: its samples, the questions they split, its pairs; then its DPO schedule."""
    rounds = {n: g for n, g in sorted(d.items()) if n >= FIRST_ROUND and g.get("data")}
    if not rounds:
        return []
    lines = ["", "Phase C rounds: M_{t-1}'s samples on Track B's prompt (checked by the yesno reward), the "
             "questions they split, the pairs (chosen yes/no) and DPO's reward accuracy at its last step:", ""]
    body = []
    for n, g in rounds.items():
        p, model = g["data"], g.get("model", {})
        kinds = ", ".join(f"{v} {k}" for k, v in sorted((p.get("kinds") or {}).items())) or "-"
        body.append([str(n), str(p.get("samples", "-")), _pct(p.get("sample_accuracy")),
                     f"{p.get('questions_all_correct', '-')} / {p.get('questions_all_wrong', '-')} / "
                     f"{p.get('questions_mixed', '-')}",
                     f"{p.get('pairs_built', '-')} -> {p.get('pairs', '-')} ({kinds})", _ratio(p.get("classes")),
                     _pct(model.get("final_rewards_accuracies"))])
    lines += table(["iter", "samples", "sample accuracy", "questions all correct / all wrong / mixed",
                    "pairs built -> trained (kinds)", "chosen yes/no", "DPO reward accuracy"], body)
    schedule = [(n, i, p) for n, g in rounds.items() for i, p in enumerate(g.get("model", {}).get("phases") or [], 1)]
    if schedule:
        lines += ["", "Phase C, the DPO schedule phase by phase (the seed's warm-up, its \"Cal-DPO\" = batch_centred, "
                  "its \"Dr-DPO\" = trim; reward margin and accuracy at the phase's last logged step):", ""]
        lines += table(["iter", "phase", "loss", "beta", "epochs", "pairs (trimmed)", "loss first -> last",
                        "reward margin", "reward accuracy", "seconds"],
                       [[str(n), str(i), p["loss_type"], f"{p['beta']:g}", f"{p['epochs']:g}",
                         f"{p['pairs']} ({p['dropped']})", f"{p['first_loss']} -> {p['last_loss']}",
                         str(p.get("final_rewards_margins", "-")), _pct(p.get("final_rewards_accuracies")),
                         str(p["seconds"])] for n, i, p in schedule])
    return lines


def goals(d: dict) -> list[list[str]]:
    acc = {n: g.get("accuracy") for n, g in d.items()}
    a, b = acc.get(1), acc.get(2)
    last_round = max((n for n in acc if n >= FIRST_ROUND and acc[n] is not None), default=None)
    c = acc.get(last_round)
    rows = [["Phase A (Baseline)", "~60% (StrategyQA)", _pct(a), "-" if a is None else "measured"]]

    def versus(name, target, value, base, need) -> list[str]:
        if value is None or base is None:
            return [name, target, _pct(value), "-"]
        gap = 100 * (value - base)
        return [name, target, f"{_pct(value)} ({gap:+.1f}pp)", "met" if gap >= need else "missed"]

    rows.append(versus("Phase B (CoT)", "+7-10pp over Phase A", b, a, 7))
    rows.append(versus(f"Phase C (DPO, {phase(last_round) if last_round else 'last round'})", "+10pp over Phase A",
                       c, a, 10))
    last = max((n for n in acc if n >= 2 and acc[n] is not None), default=None)
    if last is not None:
        g = d[last]
        full, drop, sh = g["accuracy"], g["no_draft"], g["shuffled"]
        rows.append([f"No-draft ablation ({phase(last)})", ">= 3pp below the full draft",
                     "-" if drop is None else f"{_pct(drop)} ({100 * (drop - full):+.1f}pp)",
                     "-" if drop is None else ("met" if 100 * (full - drop) >= 3 else "missed")])
        rows.append([f"Shuffled-draft ablation ({phase(last)})", "a further drop", _pct(sh),
                     "-" if sh is None or drop is None else ("met" if sh < drop else "missed")])
    label = phase(last) if last is not None else "last round"
    rows.append(attribution_goal(d, last, label))
    rows.append(question_quality_goal(d.get(last, {}).get("question_quality"), label))
    return rows


def attribution_goal(d: dict, last: int | None, label: str) -> list[str]:
    """The seed's attribution row for iteration `last`: its mean draft share beside the draft's share of the
    prompt's tokens (an attribution spread evenly over the tokens), Track B's share, and Captum's mean
    convergence delta relative to the attributed change (how exact the integral is)."""
    name = f"Attention attribution ({label})"
    target = f"integrated-gradients share on draft tokens >= {100 * ATTRIBUTION_TARGET:.0f}% after DPO"
    a = d.get(last, {}).get("attribution")
    if not a:
        return [name, target, NOT_RUN, "-"]
    share = a["draft_share"]
    if share is None:
        return [name, target, f"no question attributed of {a['questions']} (skipped: {_counts(a['skipped'])})",
                "-"]
    track_b = d.get(2, {}).get("attribution")
    beside = [f"even share {_pct(a['draft_token_fraction'])}"]
    if last != 2:
        beside.append("Track B " + (NOT_RUN if not track_b else _pct(track_b["draft_share"])))
    beside.append(f"Captum convergence delta {_pct(a['relative_delta_mean'])} of the attributed change")
    skipped = sum(a["skipped"].values())
    beside.append(f"{a['attributed']} of {a['questions']} questions" + (f", {skipped} skipped" if skipped else ""))
    if last is None or last < FIRST_ROUND:
        status = "- (no DPO round)"
    else:
        status = "met" if share >= ATTRIBUTION_TARGET else "missed"
    return [name, target, f"{_pct(share)} ({'; '.join(beside)})", status]


def question_quality_goal(q: dict | None, label: str) -> list[str]:
    """The seed's question-quality row: the win-rate of the model's clarifying questions over the base
    student's beside chance, the counts behind it and the judge's position consistency."""
    name = f"Question quality ({label})"
    target = f"win-rate >= +{100 * SEED_CRITERION:.0f} points over chance (base student's questions vs these)"
    if not q:
        return [name, target, NOT_RUN, "-"]
    win, margin = q["win_rate"], q["win_rate_minus_chance"]
    value = ("no question decided" if win is None
             else f"{_pct(win)} (chance {_pct(q['chance'])}, {100 * margin:+.1f} points)")
    counts = (f"{q['decided']} decided of {q['judged']} judged: after {q['after_wins']}, before "
              f"{q['before_wins']}, inconsistent {q['inconsistent']}, unparsable {q['unparsable']}; "
              f"position consistency {_pct(q['position_consistency'])}; of {q['questions']} questions "
              f"{q['not_compared']} without a Questions: line, {q['identical']} identical")
    met = q["meets_seed_criterion"]
    return [name, target, f"{value}; {counts}", "-" if met is None else ("met" if met else "missed")]


def _counts(counts: dict) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()) if v)


def plot_distill(axis, rows: list[dict]) -> None:
    d = [(r["iter"], r["distill"]) for r in rows if r.get("distill") and r["distill"]["accuracy"] is not None]
    its = [n for n, _ in d]
    for variant, style in (("b", "o-"), ("a", "d-"), ("no_draft", "s--"), ("shuffled", "^:")):
        points = [(n, 100 * g["variants"][variant]["accuracy"]) for n, g in d
                  if g["variants"].get(variant, {}).get("accuracy") is not None]
        if points:
            axis.plot(*zip(*points), style, label=f"accuracy, {VARIANTS[variant]}")
    points = [(n, 100 * g["predicted"]["yes"]) for n, g in d if g["predicted"].get("yes") is not None]
    if points:
        axis.plot(*zip(*points), "k:", label="predicted 'yes' share (training prompt)")
    axis.axhline(50, color="grey", linewidth=0.5)
    axis.set_ylim(0, 100)
    axis.set_xticks(its)
    axis.set_xticklabels([phase(n) for n in its], fontsize="small", rotation=15)
    axis.set_ylabel("%")
    axis.set_title("Distillation: every model on every prompt variant")
    axis.legend(loc="upper left", fontsize="small")
