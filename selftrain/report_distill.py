"""The distillation tables and plot panel of `make report` (method distill, seed 003).

Per phase (iteration 0 base, 1 Track A, 2 Track B, 3 Phase C): held-out accuracy on the prompt the model
was trained on, per true class, the predicted-class shares (a model that says "No" to everything
shows as no 100%), and the ablations; the teacher's agreement and the yes/no ratio of every data set
from the questions sent to what each phase trained on; and the seed's "Project Goals vs Actual
Results" table with its targets (absolute ones are StrategyQA's with Phi-3.5; the relative ones apply).
"""
from __future__ import annotations

PHASES = {0: "base (M0)", 1: "Track A", 2: "Track B", 3: "Phase C (DPO)"}
PROMPTS = {"a": "question", "b": "question + draft"}


def distill_metrics(m: dict) -> dict:
    """What one iteration's markers say about distillation (empty when it has none of its stages)."""
    ev = m.get("eval", {})
    if "variant" not in ev and not any(s in m for s in ("drafts", "validated", "track_a", "track_b")):
        return {}
    return {"variant": ev.get("variant"), "accuracy": ev.get("accuracy"),
            "per_class": {c: ev.get(f"accuracy_{c}") for c in ("yes", "no")},
            "predicted": {c: ev.get(f"predicted_{c}") for c in ("yes", "no")}, "unclear": ev.get("unclear"),
            "no_draft": m.get("eval_no_draft", {}).get("accuracy"), "shuffled": m.get("eval_shuffled", {}).get("accuracy"),
            "drafts": m.get("drafts", {}), "validated": m.get("validated", {}),
            "data": next((m[s] for s in ("track_a", "track_b", "pairs") if s in m), {}),
            "teacher": m.get("teacher", {}), "model": m.get("model", {})}


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ratio(classes: dict | None) -> str:
    if not classes:
        return "-"
    total = sum(classes.values()) or 1
    return f"{100 * classes.get('yes', 0) / total:.0f}/{100 * classes.get('no', 0) / total:.0f} (n={total})"


def distill_tables(rows: list[dict], table) -> list[str]:
    """Markdown lines: the phase table, the data table and the goals table (nothing for other methods)."""
    d = {r["iter"]: r["distill"] for r in rows if r.get("distill")}
    if not d:
        return []
    lines = ["", "Distillation: held-out accuracy (greedy, on each model's training prompt), per true class, the "
             "predicted classes and the ablations:", ""]
    body = []
    for n, g in sorted(d.items()):
        if g["accuracy"] is None:
            continue
        pc, pred = g["per_class"], g["predicted"]
        body.append([str(n), PHASES.get(n, f"iteration {n}"), PROMPTS.get(g["variant"], "-"), _pct(g["accuracy"]),
                     _pct(pc.get("yes")), _pct(pc.get("no")),
                     f"{_pct(pred.get('yes'))} / {_pct(pred.get('no'))}", str(g["unclear"]),
                     _pct(g["no_draft"]), _pct(g["shuffled"])])
    lines += table(["iter", "phase", "prompt", "accuracy", "yes acc", "no acc", "predicted yes / no", "unclear",
                    "no-draft ablation", "shuffled-draft ablation"], body)
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
                 ["filtered (teacher agrees)", "-", _ratio(val.get("classes_filtered")), "without balance_by"],
                 ["kept", "-", _ratio(val.get("classes_kept")), f"balance_by: {val.get('balance_by') or 'off'}"]]
    for n, name in ((1, "Track A data"), (2, "Track B data"), (3, "Phase C pairs")):
        if d.get(n, {}).get("data"):
            kinds = d[n]["data"].get("rejected_kinds")
            data_rows.append([name, "-", _ratio(d[n]["data"].get("classes")),
                              ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) if kinds else "-"])
    lines += table(["set", "accuracy / agreement", "yes/no", "notes"], data_rows)
    phases = d.get(3, {}).get("model", {}).get("phases") or []
    if phases:
        lines += ["", "Phase C, the DPO schedule phase by phase (the seed's warm-up, its \"Cal-DPO\" = batch_centred, "
                  "its \"Dr-DPO\" = trim; reward margin and accuracy at the phase's last logged step):", ""]
        lines += table(["phase", "loss", "beta", "epochs", "pairs (trimmed)", "loss first -> last", "reward margin",
                        "reward accuracy", "seconds"],
                       [[str(i), p["loss_type"], f"{p['beta']:g}", f"{p['epochs']:g}", f"{p['pairs']} ({p['dropped']})",
                         f"{p['first_loss']} -> {p['last_loss']}", str(p.get("final_rewards_margins", "-")),
                         _pct(p.get("final_rewards_accuracies")), str(p["seconds"])] for i, p in enumerate(phases, 1)])
    lines += ["", "Project Goals vs Actual Results (seed 003's targets; its absolute figures are StrategyQA's):", ""]
    lines += table(["Phase", "Target", "Actual", "Status"], goals(d))
    return lines


def goals(d: dict) -> list[list[str]]:
    acc = {n: g.get("accuracy") for n, g in d.items()}
    a, b, c = acc.get(1), acc.get(2), acc.get(3)
    rows = [["Phase A (Baseline)", "~60% (StrategyQA)", _pct(a), "-" if a is None else "measured"]]

    def versus(name, target, value, base, need) -> list[str]:
        if value is None or base is None:
            return [name, target, _pct(value), "-"]
        gap = 100 * (value - base)
        return [name, target, f"{_pct(value)} ({gap:+.1f}pp)", "met" if gap >= need else "missed"]

    rows.append(versus("Phase B (CoT)", "+7-10pp over Phase A", b, a, 7))
    rows.append(versus("Phase C (DPO)", "+10pp over Phase A", c, a, 10))
    last = max((n for n in (2, 3) if acc.get(n) is not None), default=None)
    if last is not None:
        g = d[last]
        full, drop, sh = g["accuracy"], g["no_draft"], g["shuffled"]
        rows.append([f"No-draft ablation ({PHASES[last]})", ">= 3pp below the full draft",
                     "-" if drop is None else f"{_pct(drop)} ({100 * (drop - full):+.1f}pp)",
                     "-" if drop is None else ("met" if 100 * (full - drop) >= 3 else "missed")])
        rows.append([f"Shuffled-draft ablation ({PHASES[last]})", "a further drop", _pct(sh),
                     "-" if sh is None or drop is None else ("met" if sh < drop else "missed")])
    return rows


def plot_distill(axis, rows: list[dict]) -> None:
    d = [(r["iter"], r["distill"]) for r in rows if r.get("distill") and r["distill"]["accuracy"] is not None]
    its = [n for n, _ in d]
    for key, label, style in (("accuracy", "held-out accuracy", "o-"), ("no_draft", "no-draft ablation", "s--"),
                              ("shuffled", "shuffled-draft ablation", "^:")):
        points = [(n, 100 * g[key]) for n, g in d if g[key] is not None]
        if points:
            axis.plot(*zip(*points), style, label=label)
    points = [(n, 100 * g["predicted"]["yes"]) for n, g in d if g["predicted"].get("yes") is not None]
    if points:
        axis.plot(*zip(*points), "k:", label="predicted 'yes' share")
    axis.axhline(50, color="grey", linewidth=0.5)
    axis.set_ylim(0, 100)
    axis.set_xticks(its)
    axis.set_xticklabels([PHASES.get(n, str(n)) for n in its], fontsize="small")
    axis.set_ylabel("%")
    axis.set_title("Distillation: accuracy, ablations, class balance")
    axis.legend(loc="upper left", fontsize="small")
