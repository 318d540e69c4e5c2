"""The distill report's validation rows (seed 003's goals table), from hand-written stage markers whose
metrics are built by the stages' own summaries (attribution.summarize, question_quality.summarize)."""
from __future__ import annotations

import json

from selftrain import report
from selftrain.attribution import summarize as attribution_summary
from selftrain.question_quality import summarize as question_quality_summary

NOT_RUN = "not run (make distill-checks)"


def marker(run, iteration: int, stage: str, metrics: dict) -> None:
    directory = run / f"iter_{iteration:02d}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stage}.done").write_text(json.dumps({"output": f"{stage}_1.json", "metrics": metrics}))


def evaluations(run, last: int) -> None:
    """eval.done of iterations 0..last: base and Track A on the question, the others on question + draft."""
    for n in range(last + 1):
        marker(run, n, "eval", {"variant": "a" if n < 2 else "b", "accuracy": 0.5 + n / 20, "predicted_yes": 0.5,
                                "predicted_no": 0.5, "unclear": 0})


def attributed(draft: float, fraction: float, delta: float, change: float) -> dict:
    """One question's row of attribution.question_row, the fields its summary reads."""
    return {"share": {"draft": draft, "question": 0.5, "rest": 0.5 - draft},
            "token_fraction": {"draft": fraction, "question": 0.3, "rest": 0.7 - fraction},
            "delta": delta, "logprob": -0.5, "baseline_logprob": -0.5 - change, "correct": True,
            "agrees_with_draft": True, "reply_source": "eval", "seconds": 2.0}


def goals_rows(run) -> dict[str, str]:
    """The goals table's rows of the report, by their Phase cell."""
    text = report.markdown(report.collect(run))
    goals = text.split("Project Goals vs Actual Results")[1].split("\n\n")[1]
    return {line.split(" | ")[0].removeprefix("| "): line for line in goals.splitlines()[2:]}


def test_the_goals_table_shows_attribution_and_question_quality_beside_even_share_and_chance(tmp_path):
    run = tmp_path / "run"
    evaluations(run, 4)
    marker(run, 2, "attribution", attribution_summary([attributed(0.08, 0.12, 0.01, 1.0)],
                                                      {"no_verdict": [], "zero_attribution": []}, 1))
    rows = [attributed(0.30, 0.10, 0.01, 1.0), attributed(0.20, 0.14, -0.03, 1.0)]
    marker(run, 4, "attribution", attribution_summary(rows, {"no_verdict": ["q9"], "zero_attribution": []}, 3))
    outcomes = ["after", "after", "after", "before", "inconsistent", "unparsable"]
    verdicts = ["B", "A"] * 3 + ["A", "A", "B", "B", "A", None]
    marker(run, 4, "question_quality", question_quality_summary(
        outcomes, verdicts, {"questions": 8, "no_questions_before": 1, "no_questions_after": 1, "not_compared": 1,
                             "identical": 1}))
    goals = goals_rows(run)
    assert goals["Attention attribution (Phase C round 2 (DPO))"] == (
        "| Attention attribution (Phase C round 2 (DPO)) | integrated-gradients share on draft tokens >= 20% after DPO "
        "| 25.0% (even share 12.0%; Track B 8.0%; Captum convergence delta 2.0% of the attributed change; "
        "2 of 3 questions, 1 skipped) | met |")
    # (3 + 1/2) / 5 decided = 70%; 4 of 5 decided questions the same in both orders
    assert goals["Question quality (Phase C round 2 (DPO))"] == (
        "| Question quality (Phase C round 2 (DPO)) | win-rate >= +10 points over chance (base student's questions "
        "vs these) | 70.0% (chance 50.0%, +20.0 points); 5 decided of 6 judged: after 3, before 1, inconsistent 1, "
        "unparsable 1; position consistency 80.0%; of 8 questions 1 without a Questions: line, 1 identical | met |")
    assert "| Phase C (DPO, Phase C round 2 (DPO)) | +10pp over Phase A | 70.0% (+15.0pp) | met |" in goals[
        "Phase C (DPO, Phase C round 2 (DPO))"]  # the rest of the table as it was

    marker(run, 4, "attribution", attribution_summary([attributed(0.15, 0.10, 0.0, 1.0)],
                                                      {"no_verdict": [], "zero_attribution": []}, 1))
    marker(run, 4, "question_quality", question_quality_summary(
        ["after", "before", "before"], ["B", "A", "A", "B", "A", "B"],
        {"questions": 3, "no_questions_before": 0, "no_questions_after": 0, "not_compared": 0, "identical": 0}))
    goals = goals_rows(run)
    assert goals["Attention attribution (Phase C round 2 (DPO))"].startswith(
        "| Attention attribution (Phase C round 2 (DPO)) | integrated-gradients share on draft tokens >= 20% after DPO "
        "| 15.0% (even share 10.0%; Track B 8.0%; Captum convergence delta 0.0% of the attributed change; "
        "1 of 1 questions) | missed |")
    assert "| 33.3% (chance 50.0%, -16.7 points); 3 decided of 3 judged" in goals["Question quality (Phase C round 2 (DPO))"]
    assert goals["Question quality (Phase C round 2 (DPO))"].endswith("| missed |")


def test_missing_markers_say_not_run_and_no_figure_is_made_up(tmp_path):
    run = tmp_path / "run"
    evaluations(run, 3)
    goals = goals_rows(run)
    assert goals["Attention attribution (Phase C round 1 (DPO))"].endswith(f"after DPO | {NOT_RUN} | - |")
    assert goals["Question quality (Phase C round 1 (DPO))"].endswith(f"(base student's questions vs these) | {NOT_RUN} | - |")

    # the last round attributed, Track B not: its comparison says so
    marker(run, 3, "attribution", attribution_summary([attributed(0.25, 0.10, 0.01, 1.0)],
                                                      {"no_verdict": [], "zero_attribution": []}, 1))
    assert f"25.0% (even share 10.0%; Track B {NOT_RUN}; " in goals_rows(run)["Attention attribution (Phase C round 1 (DPO))"]

    # nothing attributed, nothing decided: counted, no share and no win-rate
    marker(run, 3, "attribution", attribution_summary([], {"no_verdict": ["q1", "q2"], "zero_attribution": []}, 2))
    marker(run, 3, "question_quality", question_quality_summary(
        ["unparsable"], [None, "A"],
        {"questions": 2, "no_questions_before": 1, "no_questions_after": 0, "not_compared": 1, "identical": 0}))
    goals = goals_rows(run)
    assert goals["Attention attribution (Phase C round 1 (DPO))"].endswith(
        "| no question attributed of 2 (skipped: 2 no_verdict) | - |")
    assert goals["Question quality (Phase C round 1 (DPO))"].endswith(
        "| no question decided; 0 decided of 1 judged: after 0, before 0, inconsistent 0, unparsable 1; position "
        "consistency -; of 2 questions 1 without a Questions: line, 0 identical | - |")


def test_a_run_that_ends_with_track_b_shows_its_share_without_a_dpo_verdict(tmp_path):
    run = tmp_path / "run"
    evaluations(run, 2)
    marker(run, 2, "attribution", attribution_summary([attributed(0.30, 0.10, 0.01, 1.0)],
                                                      {"no_verdict": [], "zero_attribution": []}, 1))
    row = goals_rows(run)["Attention attribution (Track B)"]
    assert row.endswith("| 30.0% (even share 10.0%; Captum convergence delta 1.0% of the attributed change; "
                        "1 of 1 questions) | - (no DPO round) |")
