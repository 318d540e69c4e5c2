"""Rule-based JSON and regex rewards: what counts as JSON, schemas, patterns, and bad input."""
import pytest

from selftrain.config import Config, RewardConfig
from selftrain.errors import InputError
from selftrain.rewards import get_reward
from selftrain.rewards.json_format import JsonReward
from selftrain.rewards.regex import RegexReward

PERSON = {"type": "object", "required": ["name", "age"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}


def json_reward(schema=None) -> JsonReward:
    return get_reward(Config(reward_config=RewardConfig(rule_type="json", json_schema=schema or {})))


def regex_reward(pattern="", mode="search") -> RegexReward:
    return get_reward(Config(reward_config=RewardConfig(rule_type="regex", regex_pattern=pattern, regex_mode=mode)))


def record(response, metadata=None, id="r1"):
    return {"id": id, "prompt_id": "p1", "prompt": "q", "response": response, "metadata": metadata or {}}


def score_one(reward, response, metadata=None):
    (result,) = reward.score([record(response, metadata)])
    return result


# --- json -----------------------------------------------------------------------------------------

def test_registry_builds_json_and_regex_rewards():
    assert isinstance(json_reward(), JsonReward) and JsonReward.verifiable
    assert isinstance(regex_reward("x"), RegexReward) and RegexReward.verifiable


@pytest.mark.parametrize("response", ['{"a": 1}', '  \n[1, 2, {"b": null}]\n ', "42", "null", '"text"'])
def test_json_whole_reply_valid(response):
    result = score_one(json_reward(), response)
    assert result == {"reward_score": 1.0, "is_correct": True, "answer_found": True, "reward_error": None}


@pytest.mark.parametrize("response, reason", [
    ("", "not JSON: empty reply"),
    ("hello", "not JSON: Expecting value at line 1 column 1"),
    ('{"a" 1}', "not JSON: Expecting ':' delimiter at line 1 column 6"),
    ('{"a": NaN}', "not JSON: NaN is not valid JSON"),
    ('Sure! {"a": 1}', "not JSON: Expecting value at line 1 column 1"),  # no hunting for {...} in prose
])
def test_json_invalid(response, reason):
    result = score_one(json_reward(), response)
    assert result == {"reward_score": 0.0, "is_correct": False, "answer_found": False, "reward_error": reason}


def test_json_fenced_blocks():
    reward = json_reward()
    assert score_one(reward, 'Here it is:\n```json\n{"a": 1}\n```\nDone.')["is_correct"] is True
    assert score_one(reward, 'Here:\n```\n[1, 2]\n```')["is_correct"] is True
    # a ```json block wins over an earlier bare block; other languages never count
    assert score_one(reward, '```\nnot json\n```\n```json\n{"b": 2}\n```')["is_correct"] is True
    other_language = score_one(reward, '```python\n{"a": 1}\n```')
    assert other_language["reward_error"] == "not JSON: Expecting value at line 1 column 1"
    # only the first json block is read
    bad_first = score_one(reward, '```json\n{oops}\n```\n```json\n{"b": 2}\n```')
    assert bad_first["is_correct"] is False
    assert bad_first["reward_error"].startswith("not JSON (the ```json block): Expecting property name")
    # an unclosed fence (reply cut off) is not a block
    assert score_one(reward, '```json\n{"a": 1}')["is_correct"] is False


def test_json_schema_pass_and_fail():
    reward = json_reward(PERSON)
    assert score_one(reward, '{"name": "Ann", "age": 31}')["is_correct"] is True
    missing = score_one(reward, '{"name": "Ann"}')
    assert missing == {"reward_score": 0.0, "is_correct": False, "answer_found": True,
                       "reward_error": "schema: 'age' is a required property"}
    wrong_type = score_one(reward, '```json\n{"name": "Ann", "age": "31"}\n```')
    assert wrong_type["reward_error"] == "schema: $.age: '31' is not of type 'integer'"
    assert wrong_type["answer_found"] is True
    assert score_one(reward, "[1]")["reward_error"] == "schema: [1] is not of type 'object'"


def test_record_schema_overrides_config_schema():
    reward = json_reward(PERSON)
    list_schema = {"type": "array", "items": {"type": "integer"}}
    assert score_one(reward, "[1, 2]", {"json_schema": list_schema})["is_correct"] is True
    assert score_one(reward, '{"name": "Ann", "age": 3}', {"json_schema": list_schema})["is_correct"] is False
    # without a config schema, a record's schema still applies
    assert score_one(json_reward(), '{"a": 1}', {"json_schema": {"required": ["b"]}})["is_correct"] is False


def test_invalid_config_schema_is_input_error_at_construction():
    with pytest.raises(InputError, match=r"^reward_config\.json_schema: invalid JSON schema: .*\$\.type"):
        json_reward({"type": 3})


def test_invalid_record_schema_is_input_error_naming_the_record():
    reward = json_reward()
    with pytest.raises(InputError, match=r"^record r7: metadata\.json_schema: invalid JSON schema"):
        reward.score([record("{}"), record("{}", {"json_schema": {"required": "name"}}, id="r7")])
    with pytest.raises(InputError, match=r"^record r8: metadata\.json_schema: expected a JSON schema"):
        reward.score([record("{}", {"json_schema": "object"}, id="r8")])


def test_unresolvable_ref_is_input_error():
    reward = json_reward({"$ref": "https://example.invalid/schema.json"})
    with pytest.raises(InputError, match=r"^reward_config\.json_schema: cannot resolve a \$ref"):
        reward.score([record("{}")])


# --- regex ----------------------------------------------------------------------------------------

def test_regex_search_vs_fullmatch():
    response = "  The answer is 42.\n"
    search = score_one(regex_reward(r"\d+"), response)
    assert search == {"reward_score": 1.0, "is_correct": True, "answer_found": True, "predicted": "42"}
    assert score_one(regex_reward(r"\d+", "fullmatch"), response)["is_correct"] is False
    full = score_one(regex_reward(r"The answer is \d+\.", "fullmatch"), response)  # the reply is stripped
    assert full["is_correct"] is True and full["predicted"] == "The answer is 42."
    miss = score_one(regex_reward(r"\d{3}"), response)
    assert miss == {"reward_score": 0.0, "is_correct": False, "answer_found": True, "predicted": None}
    assert score_one(regex_reward(r"\d+"), "   ")["answer_found"] is False


def test_regex_inline_flags():
    assert score_one(regex_reward(r"(?i)yes"), "YES")["is_correct"] is True
    assert score_one(regex_reward(r"yes"), "YES")["is_correct"] is False


def test_record_pattern_takes_precedence():
    reward = regex_reward(r"^cat$", "fullmatch")
    results = reward.score([record("cat"), record("dog", {"regex_pattern": "dog|wolf"}, id="r2"),
                            record("cat", {"regex_pattern": "dog"}, id="r3")])
    assert [r["is_correct"] for r in results] == [True, True, False]
    # without a config pattern, records may bring their own
    assert regex_reward().score([record("dog", {"regex_pattern": "o"})])[0]["predicted"] == "o"


def test_missing_pattern_names_record_and_both_places():
    with pytest.raises(InputError) as err:
        regex_reward().score([record("x", id="r9")])
    message = str(err.value)
    assert message.startswith("record r9: no regex pattern")
    assert "metadata.regex_pattern" in message and "reward_config.regex_pattern" in message


def test_bad_pattern_names_where_it_came_from():
    with pytest.raises(InputError, match=r"^reward_config\.regex_pattern: bad regular expression '\(ab': missing \)"):
        regex_reward("(ab")
    with pytest.raises(InputError, match=r"^record r4: metadata\.regex_pattern: bad regular expression '\[z': "
                                         r"unterminated character set"):
        regex_reward("ok").score([record("ok"), record("x", {"regex_pattern": "[z"}, id="r4")])
    with pytest.raises(InputError, match=r"^record r5: metadata\.regex_pattern: expected a non-empty string"):
        regex_reward("ok").score([record("x", {"regex_pattern": 5}, id="r5")])


def test_bad_mode_is_input_error():
    with pytest.raises(InputError, match=r"^reward_config\.regex_mode: 'match' is not one of search, fullmatch"):
        regex_reward("x", "match")


def test_each_distinct_pattern_compiled_once(monkeypatch):
    import re

    reward = regex_reward("a")
    calls = []
    real_compile = re.compile
    monkeypatch.setattr(re, "compile", lambda p, *a: calls.append(p) or real_compile(p, *a))
    reward.score([record("a", {"regex_pattern": "b"}, id=str(i)) for i in range(5)] + [record("a")])
    assert calls == ["b"]
