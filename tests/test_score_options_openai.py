"""`score_options` (expected-score judging) on the openai backend, against real servers on loopback.

The fake server (tests/openai_fake.py, a thread of this process) checks the request body, both
shapes of top logprobs (legacy completions and llama-server's), exact token matching, replies
without logprobs (one clear error naming the key), malformed ones, the retries and error
messages `generate` has, and `generation.api: chat` (refused before anything is sent). The real
llama.cpp server (llama-cpp-python, launched by `LaunchedServerBackend` on the embedded model's
GGUF, restarted with logits on the first `score_options`) scores judge prompts: six values,
deterministic, and the best option is the server's own greedy token.
"""
from __future__ import annotations

import json
import math

import pytest

from selftrain.config import GenerationConfig
from selftrain.generation import BackendError, OptionLogprobs, Request, SamplingParams, ScoreRequest
from selftrain.generation.openai_compat import SCORE_TOP_LOGPROBS, OpenAIBackend

# tests/ is on sys.path (pytest prepends a test file's folder); `serve` is the fault tests' fixture: fake servers,
# quick client backoff, no proxy or key from the environment; `backend` their OpenAIBackend on one (completions)
from test_backend_openai_faults import KEY_ENV, MODEL, SECRET, backend, serve  # noqa: F401

SPACED = tuple(f" {d}" for d in range(6))  # a tokenizer whose score tokens carry the space ("Score:" + " 3")


def score_requests(count: int, options=SPACED) -> list[ScoreRequest]:
    return [ScoreRequest(f"k{i}", f"judge prompt {i}\nScore:", options, "judge prompt") for i in range(count)]


def scored(b: OpenAIBackend, requests: list[ScoreRequest]) -> dict[str, tuple]:
    with b:
        return {r.key: r.logprobs for r in b.score_options(requests)}


def completion(logprobs, text=" 3", finish="length", usage=True) -> str:
    reply = {"id": "cmpl-1", "object": "text_completion", "model": MODEL,
             "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": logprobs}]}
    if usage:
        reply["usage"] = {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12}
    return json.dumps(reply)


def legacy(top: dict | None, token=" 3") -> dict:
    """The legacy completions shape (OpenAI, vLLM, llama-cpp-python) for one generated token."""
    return {"tokens": [token], "text_offset": [0], "token_logprobs": [(top or {}).get(token)], "top_logprobs": [top]}


def replying(text: str):
    return lambda n, path, body, headers: (200, {}, text)


# --- the fake server ---

def test_one_completions_call_per_request_and_exact_token_matching(serve):
    top = {" 3": -0.4, "3": -0.2, " 4": -1.5, "\n": -2.5, " 0": -7.25}
    server = serve(replying(completion(legacy(top))))
    b = backend(server.url, extra_body={"min_p": 0.0})
    got = scored(b, score_requests(3))
    # " 3" is the listed " 3" only: "3" is another token, and absent options are None, never 0 or -inf
    assert got == {f"k{i}": (-7.25, None, None, -0.4, -1.5, None) for i in range(3)}
    assert all(path == "/v1/completions" for path, _, _ in server.calls)
    assert sorted(server.bodies(), key=lambda body: body["prompt"]) == [
        {"model": MODEL, "prompt": f"judge prompt {i}\nScore:", "max_tokens": 1, "temperature": 0.0, "top_p": 1.0,
         "seed": 0, "logprobs": SCORE_TOP_LOGPROBS, "echo": False, "min_p": 0.0} for i in range(3)]
    assert (b.stats.requests, b.stats.completions, b.stats.prompt_tokens, b.stats.completion_tokens) == (3, 3, 33, 0)


def test_options_without_the_space_match_their_own_tokens(serve):
    top = {"3": -0.1, "4": -2.5, " 3": -3.0}  # SmolLM2 writes "Score: " + "3": the digit alone is the token
    server = serve(replying(completion(legacy(top, "3"), text="3")))
    assert scored(backend(server.url), score_requests(1, tuple("012345"))) == {"k0": (None, None, None, -0.1, -2.5, None)}


def test_llama_servers_shape_is_read_too(serve):
    # llama.cpp's own llama-server answers /v1/completions with the chat shape of logprobs
    entries = [{"id": 220, "token": " 5", "bytes": [32, 53], "logprob": -0.3},
               {"id": 221, "token": " 4", "bytes": [32, 52], "logprob": -1.9},
               {"id": 9, "token": " 4", "bytes": [32, 52], "logprob": -6.0},  # two tokens rendered alike
               {"id": 17, "token": "\n", "bytes": [10], "logprob": -3.4028234663852886e38}]  # its -inf
    logprobs = {"content": [{"id": 220, "token": " 5", "bytes": [32, 53], "logprob": -0.3, "top_logprobs": entries}]}
    server = serve(replying(completion(logprobs, text=" 5")))
    assert scored(backend(server.url), score_requests(1)) == {"k0": (None, None, None, None, -1.9, -0.3)}


def test_a_float_error_above_zero_reads_as_zero(serve):
    server = serve(replying(completion(legacy({" 3": 2e-7, " 2": -16.0}))))
    assert scored(backend(server.url), score_requests(1))["k0"] == (None, None, -16.0, 0.0, None, None)


@pytest.mark.parametrize("logprobs", [
    None,  # the field null (llama-cpp-python and vLLM without `logprobs`, OpenAI's chat models)
    "missing",
    {"tokens": [" 3"], "token_logprobs": [-0.1]},  # no top list
    {"tokens": [" 3"], "token_logprobs": [-0.1], "top_logprobs": None},
    {"tokens": [" 3"], "token_logprobs": [-0.1], "top_logprobs": []},  # a token generated, nothing listed
    {"tokens": [" 3"], "token_logprobs": [-0.1], "top_logprobs": [None]},
    {"tokens": [" 3"], "token_logprobs": [-0.1], "top_logprobs": [{}]},
    {"content": []},
    {"content": [{"token": " 3", "logprob": -0.1, "top_logprobs": []}]},
])
def test_a_server_without_logprobs_stops_with_one_clear_line(serve, logprobs):
    reply = completion(None) if logprobs == "missing" else completion(logprobs)
    if logprobs == "missing":
        data = json.loads(reply)
        del data["choices"][0]["logprobs"]
        reply = json.dumps(data)
    server = serve(replying(reply))
    with pytest.raises(BackendError) as error:
        scored(backend(server.url, max_retries=2), score_requests(1))
    message = str(error.value)
    assert "request k0: the server returned no logprobs" in message and "\n" not in message
    assert "self_rewarding.judge_scoring: expected needs a server that returns them (vLLM, llama.cpp and OpenAI do)" \
        in message and "judge_scoring: sampled otherwise" in message
    assert len(server.calls) == 1  # a reply outside what was asked for is not retried


def test_the_fakes_default_reply_has_no_logprobs(serve):
    server = serve()  # openai_fake.answer: "logprobs": null, like a server asked for none
    with pytest.raises(BackendError, match=r"request k0: the server returned no logprobs \(`choices\[0\]\.logprobs`"):
        scored(backend(server.url), score_requests(1))


@pytest.mark.parametrize("text, what", [
    ("<html>busy</html>", "not JSON"),
    (json.dumps({"object": "text_completion"}), "expected an object with a `choices` list"),
    (json.dumps({"choices": []}), "expected one choice"),
    (json.dumps({"choices": [{"text": " 3", "logprobs": legacy({" 3": -0.1})}] * 2}), "expected one choice"),
    (completion([{" 3": -0.1}]), "choices[0].logprobs: expected an object"),
    (completion({"top_logprobs": {" 3": -0.1}}), "choices[0].logprobs.top_logprobs: expected a list"),
    (completion({"top_logprobs": [[" 3", -0.1]]}), "top_logprobs[0]: expected an object of token: logprob"),
    (completion(legacy({" 3": "-0.1"})), "expected token texts with logprobs <= 0"),
    (completion(legacy({" 3": True})), "expected token texts with logprobs <= 0"),
    (completion(legacy({" 3": float("nan")})), "expected token texts with logprobs <= 0"),
    (completion(legacy({" 3": 0.5})), "expected token texts with logprobs <= 0"),
    (completion({"content": [{"token": " 3", "top_logprobs": [[" 3", -0.1]]}]}), "expected objects with `token`"),
    (completion({"content": [{"token": " 3", "top_logprobs": [{"token": 3, "logprob": -0.1}]}]}),
     "expected token texts with logprobs"),
    (completion({"content": [{"token": " 3", "top_logprobs": [{"token": " 3"}]}]}), "expected token texts"),
    (json.dumps({"choices": [{"text": " 3", "finish_reason": "length", "logprobs": legacy({" 3": -0.1})}],
                 "usage": {"prompt_tokens": "11", "completion_tokens": 1}}), "usage: expected integer prompt_tokens"),
])
def test_malformed_replies_stop_with_the_request_key(serve, text, what):
    server = serve(replying(text))
    with pytest.raises(BackendError) as error:
        scored(backend(server.url), score_requests(1))
    message = str(error.value)
    assert "request k0: bad reply: " in message and what in message and "\n" not in message


def test_an_empty_reply_that_stopped_lists_nothing_and_scores_none(serve):
    # llama-cpp-python: when the token it picks ends the reply, no completion token, so nothing is listed
    logprobs = {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}
    server = serve(replying(completion(logprobs, text="", finish="stop")))
    assert scored(backend(server.url), score_requests(2)) == {"k0": (None,) * 6, "k1": (None,) * 6}


def test_options_listed_only_without_their_space_are_pointed_out_once(serve, capfd):
    server = serve(replying(completion(legacy({"3": -0.1, "4": -2.0}, "3"), text="3")))
    got = scored(backend(server.url), score_requests(3))
    assert set(got.values()) == {(None,) * 6}
    err = capfd.readouterr().err
    assert err.count("none of the options") == 1 and "but '3' is" in err and "leading space" in err


def test_chat_api_is_refused_before_anything_is_sent(serve):
    server = serve()
    b = backend(server.url, api="chat")
    with pytest.raises(BackendError) as error:
        scored(b, score_requests(1))
    message = str(error.value)
    assert "expected-score judging (self_rewarding.judge_scoring: expected) needs generation.api: completions" \
        in message and 'after "Score:"' in message and "judge_scoring: sampled" in message and "\n" not in message
    assert server.calls == [] and b.stats.requests == 0


def test_requests_are_checked_before_anything_is_sent(serve):
    server = serve()
    twice = [ScoreRequest("k", "p", SPACED), ScoreRequest("k", "q", SPACED)]
    with pytest.raises(BackendError, match="request k: key appears twice"):
        scored(backend(server.url), twice)
    with pytest.raises(BackendError, match="request k: options must be non-empty texts"):
        scored(backend(server.url), [ScoreRequest("k", "p", ())])
    assert server.calls == []


def test_retries_status_errors_and_the_key_like_generate(serve, capfd, monkeypatch):
    ok = completion(legacy({" 5": -0.01}), text=" 5")
    server = serve(lambda n, path, body, headers: (500, {}, '{"error": {"message": "busy"}}') if n == 0
                   else (200, {}, ok))
    b = backend(server.url, max_retries=2)
    assert scored(b, score_requests(1)) == {"k0": (None,) * 5 + (-0.01,)}
    assert len(server.calls) == 2 and b.stats.requests == 1
    assert "request k0: HTTP 500; retry 1/2" in capfd.readouterr().err

    # vLLM started with a lower --max-logprobs answers 400, echoing what it was sent (the key here)
    monkeypatch.setenv(KEY_ENV, SECRET)
    server = serve(lambda n, path, body, headers: (
        400, {}, json.dumps({"message": f"Requested sample logprobs of 20, which is greater than max allowed: 5 "
                                        f"({headers['authorization']})"})))
    with pytest.raises(BackendError) as error:
        scored(backend(server.url), score_requests(1))
    message = str(error.value)
    assert server.calls[0][1]["authorization"] == f"Bearer {SECRET}" and SECRET not in message
    assert "request k0: HTTP 400: Requested sample logprobs of 20" in message and "<redacted>" in message
    assert "SCORE_TOP_LOGPROBS" in message and "--max-logprobs" in message and len(server.calls) == 1


def test_concurrency_bound_and_no_usage(serve, capfd):
    import threading
    import time

    lock, seen = threading.Lock(), []

    def slow(n, path, body, headers):
        time.sleep(0.05)
        with lock:
            seen.append(body["prompt"])
        return 200, {}, completion(legacy({" 2": -0.5}), usage=False)

    server = serve(slow)
    b = backend(server.url, max_concurrency=3)
    got = scored(b, score_requests(7))
    assert sorted(got) == [f"k{i}" for i in range(7)] and server.peak == 3 and len(seen) == 7
    assert (b.stats.requests, b.stats.completions, b.stats.prompt_tokens) == (7, 7, 0) and b.stats.seconds > 0
    assert capfd.readouterr().err.count("sends no `usage`") == 1


# --- the real llama.cpp server ---

JUDGE = ("Review the user's question and the corresponding response using the additive 5-point scoring system "
         "described below. Points are accumulated based on the satisfaction of each criterion.\n"
         "User: {question}\n<response>{answer}</response>\n"
         "Conclude with the score using the format: \"Score: <total points>\"")
CASES = [("What is 2 + 3?", "2 + 3 = 5."), ("Name a primary colour.", "Blue is a primary colour."),
         ("What is the capital of France?", "I like turtles."), ("Write a haiku about rain.", "")]
ENDED = "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\nHello! How can I help you today?"


@pytest.mark.slow
def test_the_llama_cpp_server_scores_judge_prompts(tokenizer):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is a pinned test dependency (make setup)")
    from selftrain.generation.server import LaunchedServerBackend
    from selftrain.self_rewarding import score_opening

    label, options = score_opening(tokenizer)  # SmolLM2: "Score: " then "0" .. "5"
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": JUDGE.format(question=q, answer=a)}],
                                             tokenize=False, add_generation_prompt=True) + label for q, a in CASES]
    requests = [ScoreRequest(f"c{i}", p, options) for i, p in enumerate(prompts)]
    # a prompt whose most likely next token ends the reply: llama-cpp-python lists nothing then
    requests.append(ScoreRequest("ended", ENDED, options))
    greedy = SamplingParams(temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=1)
    one_token = [Request(r.key, r.prompt_text, None, greedy, seed=0) for r in requests]
    gen = GenerationConfig(backend="openai", server="llama_cpp")
    with LaunchedServerBackend(gen, "smollm2-135m", progress=False) as backend:
        first_pid = backend.server.pid
        before = {c.key: c.text for c in backend.generate(one_token)}  # launched without logits
        first = {r.key: r for r in backend.score_options(requests)}
        assert backend.server.logprobs and backend.server.pid != first_pid  # restarted with --logits_all true
        again = {r.key: r for r in backend.score_options(requests)}
        after = {c.key: c.text for c in backend.generate(one_token)}
        stats = backend.stats
    assert first == again  # deterministic
    assert before == after  # the restart serves the same weights
    assert before.pop("ended") == "" and first.pop("ended").logprobs == (None,) * 6
    for key, result in first.items():
        assert isinstance(result, OptionLogprobs) and len(result.logprobs) == 6
        listed = [lp for lp in result.logprobs if lp is not None]
        assert listed and all(lp <= 0 for lp in listed), result
        assert sum(math.exp(lp) for lp in listed) <= 1 + 1e-5
        best = options[max((lp, i) for i, lp in enumerate(result.logprobs) if lp is not None)[1]]
        if before[key] in options:  # the server's own greedy token is the most likely option
            assert best == before[key], (key, before[key], result)
    assert sum(before[key] in options for key in first) >= 2, before  # the check above was not vacuous
    # every score call counted, and the generate calls on both launches
    assert stats.requests == 4 * len(requests) and stats.completions == 4 * len(requests)
    assert stats.prompt_tokens > 4 * len(CASES) * 50 and stats.completion_tokens == 2 * len(CASES)
