"""attribution.py: the integrated-gradients share of a model's verdict on the draft's tokens (seed 003's
validation table: "Integrated-gradients mass on draft tokens, >= 20% after DPO"; selftrain/attribution.py).

On Track B's prompt (the question and the base student's draft: distill_eval's variant b) for the first
`distill.attribution_questions` test questions, the model's own greedy reply is read from the iteration's
Track B evaluation (`eval` or `eval_b`, when it evaluated this same model) or else generated here; the
log-probability of the reply's final verdict (`**YES**` / `**NO**`) is attributed to the prompt's tokens
with Captum's LayerIntegratedGradients (`distill.attribution_steps` steps, `attribution_batch_size` per
pass). Reported per question and as means: the share on the draft's tokens, on the question's and on the
rest, and the convergence delta. A reply with no final verdict is skipped and counted.
Output: iter_NN/attribution_<ts>.json and attribution.done.

  python attribution.py --config configs/distill.yaml --run_dir results/distill --iteration 3
"""
from __future__ import annotations

import json
from pathlib import Path

from selftrain.attribution import attribute_questions, attribution_dtype, summarize
from selftrain.cli import base_parser, resolve_config, run
from selftrain.config import Config
from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.models import default_device, load_model, load_tokenizer
from selftrain.prompts import PromptSpec, build_messages, render_prompt
from selftrain.runs import iter_dir, open_stage, read_marker
from selftrain.stages.distill_eval import VARIANTS, model_and_tests, stage_name, variant_records

TRACK_B = "b"  # distill_eval's variant whose prompt is attributed


def same_model(a: str | None, b: str) -> bool:
    if a is None:
        return False
    return Path(a).resolve() == Path(b).resolve() if Path(a).exists() and Path(b).exists() else a == b


def eval_replies(run_dir, iteration: int, model_name: str) -> tuple[dict[str, str], Path | None]:
    """{id: reply} of the iteration's Track B evaluation when it evaluated `model_name`, and its file."""
    for name in dict.fromkeys(stage_name(TRACK_B, main) for main in VARIANTS):  # eval, eval_b
        marker = read_marker(run_dir, iteration, name)
        if not marker or marker["metrics"].get("variant") != TRACK_B or not same_model(marker.get("model"), model_name):
            continue
        path = iter_dir(run_dir, iteration) / marker["output"]
        try:
            results = json.loads(path.read_text())["results"]
            return {r["id"]: r["response"] for r in results}, path
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: not a distill_eval results file ({type(exc).__name__}: {exc})") from None
    return {}, None


def generate_replies(config: Config, model_name: str, model, tokenizer, spec: PromptSpec,
                     records: list[dict]) -> dict[str, str]:
    """Greedy replies of the loaded model to `records`, as evaluation generates them (its sampling and seeds)."""
    from selftrain.generation import Request, request_seed
    from selftrain.generation.jobs import sampling_params
    from selftrain.generation.local import LocalBackend

    backend = LocalBackend(model_name, spec, batch_size=config.eval_batch_size, model=model, tokenizer=tokenizer)
    params = sampling_params(config, greedy=True)
    requests = [Request(r["id"], render_prompt(tokenizer, r, spec), tuple(build_messages(r, spec)), params,
                        request_seed(config.seed, r["id"])) for r in records]
    with backend:
        return {c.key: c.text for c in backend.generate(requests)}


def run_attribution(config: Config, model_name: str, tests: list[dict],
                    replies: dict[str, str]) -> tuple[dict, list[dict]]:
    """Attribute each test question's verdict (replies missing from `replies` are generated): (summary, rows)."""
    d = config.distill
    spec = PromptSpec.from_config(config)
    device = default_device()
    dtype = attribution_dtype(config.dtype, device)
    tokenizer = load_tokenizer(model_name)
    model = load_model(model_name, dtype=dtype)
    model.requires_grad_(False)  # gradients flow to the embeddings' outputs only
    records = variant_records(TRACK_B, tests, config.seed)
    missing = [r for r in records if r["id"] not in replies]
    generated = generate_replies(config, model_name, model, tokenizer, spec, missing) if missing else {}
    if missing:
        log(f"attribution: {len(missing)} replies not in the evaluation's results: generated them (greedy)")
    items = [{"record": r, "test": t, "reply": replies.get(t["id"], generated.get(t["id"])),
              "source": "eval" if t["id"] in replies else "generated"} for r, t in zip(records, tests)]
    baseline_id = tokenizer.pad_token_id
    log(f"attribution: {model_name} ({model.dtype}, {model.device}) on {len(items)} test questions, "
        f"{d.attribution_steps} steps, baseline {tokenizer.decode([baseline_id])!r} on every prompt token")

    def progress(row: dict) -> None:
        log(f"{row['id']}: draft {row['share']['draft']:.3f} question {row['share']['question']:.3f} "
            f"rest {row['share']['rest']:.3f} (delta {row['delta']:+.4f}, {row['seconds']}s)")

    try:
        rows, skipped = attribute_questions(model, tokenizer, spec, items, baseline_id=baseline_id,
                                            n_steps=d.attribution_steps, batch_size=d.attribution_batch_size,
                                            progress=progress)
    except ValueError as exc:
        raise InputError(f"attribution: {exc} (check use_chat_template / the model's chat template)") from None
    summary = summarize(rows, skipped, len(items))
    summary.update(model=model_name, variant=TRACK_B, n_steps=d.attribution_steps, method="gausslegendre",
                   baseline=tokenizer.decode([baseline_id]), dtype=str(model.dtype).removeprefix("torch."),
                   device=str(model.device))
    log(f"attribution: draft {summary['draft_share']} question {summary['question_share']} rest "
        f"{summary['rest_share']} over {summary['attributed']} questions (skipped {summary['skipped']}), "
        f"mean |delta| {summary['abs_delta_mean']}")
    return summary, rows


def main(argv=None):
    p = base_parser(__doc__)
    p.add_argument("--model", help="checkpoint (default: iteration N's model; the base model for N=0)")
    args = p.parse_args(argv)
    config = resolve_config(args, {})
    model_name, tests = model_and_tests(config, args, "attribution.py")
    n = config.distill.attribution_questions
    tests = tests[:n] if n else tests
    stage = open_stage(args, "attribution", suffix=".json")
    if stage.done():
        return
    replies, source = eval_replies(args.run_dir, args.iteration, model_name)
    summary, rows = run_attribution(config, model_name, tests, replies)
    stage.path.parent.mkdir(parents=True, exist_ok=True)
    stage.path.write_text(json.dumps({**summary, "results": rows}, indent=1) + "\n")
    stage.finish(config, summary, {"model": model_name, "replies": str(source) if source else None})


if __name__ == "__main__":
    run(main)
