"""How much of a reply's verdict its prompt's draft decides: integrated gradients over the prompt's
tokens (seed 003's validation table: "Integrated-gradients mass on draft tokens, >= 20% after DPO").

For one Track B prompt (the question and the student's draft) and the model's own reply, the attributed
quantity is the log-probability of the reply's final verdict token(s) (the `**YES**` / `**NO**` it ends
with) given the prompt and the reply before the verdict. Captum's LayerIntegratedGradients integrates its
gradient over the input embeddings along the straight path from a baseline to the real input; the
baseline changes only the prompt (every prompt token becomes the pad token) and keeps the reply's tokens,
so the reply gets no attribution and all of it lands on the prompt. Each token's attribution is summed
over the embedding dimension; its absolute value, normalised over the prompt's tokens, is its share.
The shares are reported for the draft's tokens, the question's, and the rest (the chat template, the
labels, the instruction); a token belongs to the part its characters overlap (the tokenizer's offsets).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from selftrain.distill import draft_answer, expected, question_of
from selftrain.errors import InputError
from selftrain.prompts import PromptSpec, completion_text, encode_prompt, render_prompt
from selftrain.rewards.yesno import BOLD_VERDICT, bold_answer

PARTS = ("draft", "question", "rest")
METHOD = "gausslegendre"  # Captum's default rule: the most accurate for few steps
TOP_TOKENS = 5  # the prompt tokens with the largest shares, listed per question


def attribution_dtype(dtype: str, device: torch.device) -> str:
    """The model's dtype for attribution: the config's, except that `auto` is fp32 on CPU (the gradients of
    every integration step are summed; bf16 would blur them, and a small model costs little in fp32)."""
    return "fp32" if device.type == "cpu" and dtype == "auto" else dtype


def verdict_span(reply: str) -> tuple[str, int, int] | None:
    """The reply's final verdict: ("yes" / "no", start, end) of the word inside the last `**YES**` / `**NO**`,
    or None when it has none or its last verdict line says both (evaluation reads no answer there either)."""
    answer = bold_answer(reply)
    if answer is None:
        return None
    last = list(BOLD_VERDICT.finditer(reply))[-1]
    return answer, last.start(1), last.end(1)


def prompt_spans(rendered: str, content: str, question: str, draft: str) -> dict[str, tuple[int, int]]:
    """Character spans of the question and the draft in the rendered prompt. The record's prompt is the
    last user turn, found in the rendering verbatim (few-shot turns come before it); the question is
    found in it, then the draft after the question."""
    at = rendered.rfind(content)
    if at < 0:
        raise ValueError("the rendered prompt does not hold the record's prompt verbatim (the chat template "
                         "rewrites it), so the draft's tokens cannot be located")
    q = content.find(question)
    if q < 0:
        raise ValueError("the record's prompt does not hold its question")
    d = content.find(draft, q + len(question))
    if d < 0:
        raise ValueError("the record's prompt does not hold the draft after the question")
    return {"question": (at + q, at + q + len(question)), "draft": (at + d, at + d + len(draft))}


def token_parts(offsets: list[tuple[int, int]], spans: dict[str, tuple[int, int]]) -> list[str]:
    """Per token, the part its characters overlap: draft, question (in that order), else rest."""
    def overlaps(token: tuple[int, int], span: tuple[int, int]) -> bool:
        return token[0] < span[1] and token[1] > span[0]

    return [next((p for p in ("draft", "question") if overlaps(o, spans[p])), "rest") for o in offsets]


@dataclass
class Encoded:
    """One question ready to attribute: the prompt, then the reply up to its last verdict token."""

    input_ids: list[int]  # prompt + reply tokens before the last verdict token
    prompt_len: int
    targets: list[int]  # the verdict's token ids, each predicted at one of the last len(targets) positions
    parts: list[str]  # per prompt token: draft | question | rest
    tokens: list[str]  # the prompt's tokens as text
    verdict: str  # "yes" / "no"


def encode(tokenizer, spec: PromptSpec, record: dict, question: str, draft: str, reply: str) -> Encoded | None:
    """`record` (Track B's prompt record holding `question` and `draft`) and `reply` as token ids, with each
    prompt token's part; None when the reply has no final verdict. The prompt is tokenized by the rule of
    training and generation (prompts.encode_prompt), the reply as a training target (completion_text)."""
    if not getattr(tokenizer, "is_fast", False):
        raise InputError("attribution needs a fast tokenizer (its character offsets locate the draft's tokens)")
    target_text = completion_text(reply, spec)
    verdict = verdict_span(target_text)
    if verdict is None:
        return None
    rendered = render_prompt(tokenizer, record, spec)
    prompt = tokenizer(rendered, add_special_tokens=not spec.use_chat_template, return_offsets_mapping=True)
    ids = list(prompt["input_ids"])
    if ids != list(encode_prompt(tokenizer, rendered, spec)):
        raise RuntimeError("the prompt's tokens with offsets differ from prompts.encode_prompt's")
    parts = token_parts([tuple(o) for o in prompt["offset_mapping"]],
                        prompt_spans(rendered, record["prompt"], question, draft.strip()))
    answer, start, end = verdict
    completion = tokenizer(target_text, add_special_tokens=False, return_offsets_mapping=True)
    inside = [i for i, (s, e) in enumerate(completion["offset_mapping"]) if s < end and e > start]
    first, last = inside[0], inside[-1]
    reply_ids = list(completion["input_ids"])
    return Encoded(ids + reply_ids[:last], len(ids), reply_ids[first:last + 1], parts,
                   [tokenizer.decode([i]) for i in ids], answer)


def verdict_logprob(model, targets: torch.Tensor):
    """f(input_ids) -> per row, log p(the verdict tokens | everything before them): what is attributed.
    Only the last len(targets) positions' logits are computed (they predict the verdict's tokens)."""
    n = targets.shape[-1]

    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=input_ids, use_cache=False, logits_to_keep=n).logits.float()
        chosen = targets.expand(input_ids.shape[0], n).unsqueeze(-1)
        return torch.log_softmax(logits, dim=-1).gather(-1, chosen).squeeze(-1).sum(-1)

    return forward


def integrated_gradients(model, encoded: Encoded, baseline_id: int, n_steps: int, batch_size: int) -> dict:
    """Captum's LayerIntegratedGradients over the input embeddings for one question: each input token's
    attribution (summed over the embedding dimension; the reply's are 0 by construction), the convergence
    delta Captum returns, and the attributed log-probability at the input and at the baseline."""
    from captum.attr import LayerIntegratedGradients

    device = next(model.parameters()).device
    ids = torch.tensor([encoded.input_ids], device=device)
    baseline = ids.clone()
    baseline[0, :encoded.prompt_len] = baseline_id
    forward = verdict_logprob(model, torch.tensor(encoded.targets, device=device))
    lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
    attributions, delta = lig.attribute(ids, baselines=baseline, n_steps=n_steps, method=METHOD,
                                        internal_batch_size=batch_size, return_convergence_delta=True)
    with torch.no_grad():
        at_input, at_baseline = forward(torch.cat([ids, baseline])).tolist()
    return {"per_token": attributions[0].float().sum(-1).detach().cpu(), "delta": float(delta.reshape(-1)[0]),
            "logprob": at_input, "baseline_logprob": at_baseline}


def shares(per_token: torch.Tensor, encoded: Encoded) -> list[float] | None:
    """Each prompt token's share: |attribution| normalised over the prompt's tokens (None: all are 0)."""
    magnitude = per_token[:encoded.prompt_len].abs().double()
    total = float(magnitude.sum())
    return None if total == 0 else (magnitude / total).tolist()


def attribute_questions(model, tokenizer, spec: PromptSpec, items: list[dict], *, baseline_id: int, n_steps: int,
                        batch_size: int, progress=None) -> tuple[list[dict], dict[str, list[str]]]:
    """Attribute each item ({record: Track B's prompt record, test: the test draft row, reply, source}):
    the per-question rows, and the ids skipped by reason (no_verdict, zero_attribution)."""
    rows, skipped = [], {"no_verdict": [], "zero_attribution": []}
    for item in items:
        test, reply = item["test"], item["reply"]
        started = time.perf_counter()
        encoded = encode(tokenizer, spec, item["record"], question_of(test), test["response"], reply)
        if encoded is None:
            skipped["no_verdict"].append(test["id"])
            continue
        result = integrated_gradients(model, encoded, baseline_id, n_steps, batch_size)
        share = shares(result["per_token"], encoded)
        if share is None:
            skipped["zero_attribution"].append(test["id"])
            continue
        rows.append(question_row(test, item["source"], encoded, result, share, time.perf_counter() - started))
        if progress is not None:
            progress(rows[-1])
    return rows, skipped


def question_row(test: dict, source: str, encoded: Encoded, result: dict, share: list[float], seconds: float) -> dict:
    n = encoded.prompt_len
    signed = result["per_token"][:n].tolist()
    by_part = {p: [i for i in range(n) if encoded.parts[i] == p] for p in PARTS}
    top = sorted(range(n), key=lambda i: -share[i])[:TOP_TOKENS]
    said = draft_answer(test["response"])
    return {
        "id": test["id"], "expected": expected(test), "verdict": encoded.verdict,
        "correct": encoded.verdict == expected(test), "draft_answer": said,
        "agrees_with_draft": None if said is None else said == encoded.verdict, "reply_source": source,
        "prompt_tokens": n, "tokens": {p: len(by_part[p]) for p in PARTS},
        "share": {p: round(sum(share[i] for i in by_part[p]), 6) for p in PARTS},
        "token_fraction": {p: round(len(by_part[p]) / n, 6) for p in PARTS},
        "signed": {p: round(sum(signed[i] for i in by_part[p]), 6) for p in PARTS},
        "logprob": round(result["logprob"], 6), "baseline_logprob": round(result["baseline_logprob"], 6),
        "delta": round(result["delta"], 6),
        "top_tokens": [[encoded.tokens[i], encoded.parts[i], round(share[i], 4)] for i in top],
        "seconds": round(seconds, 2),
    }


def summarize(rows: list[dict], skipped: dict[str, list[str]], asked: int) -> dict:
    """Means over the attributed questions: the share of each part, the draft's share of the prompt's
    tokens (what a uniform attribution would give it), and the convergence delta, absolute and
    relative to the attributed change (|delta| / |f(input) - f(baseline)|)."""
    def mean(values: list[float]) -> float | None:
        return round(sum(values) / len(values), 4) if values else None

    change = [abs(r["logprob"] - r["baseline_logprob"]) for r in rows]
    return {
        "questions": asked, "attributed": len(rows),
        "skipped": {k: len(v) for k, v in skipped.items()}, "skipped_ids": skipped,
        **{f"{p}_share": mean([r["share"][p] for r in rows]) for p in PARTS},
        "draft_token_fraction": mean([r["token_fraction"]["draft"] for r in rows]),
        "abs_delta_mean": mean([abs(r["delta"]) for r in rows]),
        "abs_delta_max": round(max(abs(r["delta"]) for r in rows), 4) if rows else None,
        "relative_delta_mean": mean([abs(r["delta"]) / c for r, c in zip(rows, change) if c > 0]),
        "accuracy": mean([float(r["correct"]) for r in rows]),
        "agrees_with_draft": mean([float(r["agrees_with_draft"]) for r in rows if r["agrees_with_draft"] is not None]),
        "reply_sources": {s: sum(r["reply_source"] == s for r in rows) for s in ("eval", "generated")},
        "seconds_per_question": mean([r["seconds"] for r in rows]),
    }
