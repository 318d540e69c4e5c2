"""lm-eval's IFEval checkers (Google's reference implementation, lm-eval 0.4.13), imported offline-safe.

    check_response(ids, kwargs_list, prompt, response) -> {"strict": [bool, ...], "loose": [bool, ...]}
    validate_instructions(ids, kwargs_list)             -> None, or what is wrong ("kwargs[1]: ...")
    availability_problem(ids)                           -> None, or why this machine cannot check one
    ifeval_accuracies(rows)                             -> IFEval's four accuracies over judged rows

Strict and loose are lm-eval's own `test_instruction_following_strict/_loose`
(loose also accepts the reply without its first line, its last line, or its
`*`s). kwargs follow IFEval's schema: one dict per instruction, falsy values
dropped (lm-eval's rule, so the Hub's all-keys-with-None rows work).

Offline traps of lm-eval handled here (docs: /work/shared/notes, section 4):
- importing `instructions_util` calls `nltk.download("punkt_tab")` when the
  data is missing, then prints "Downloaded punkt_tab" whether or not it did:
  the import runs with a silent stand-in for `nltk.download` and its stdout
  captured, so no network is tried and nothing false is printed;
- two checkers need nltk's punkt_tab data (`PUNKT_INSTRUCTIONS`); without it
  they are unavailable, and checking one is an InputError saying what to
  install, never a wrong score;
- a missing or invalid parameter (e.g. num_words -1, letter "#") makes lm-eval
  draw one from the global `random`, scoring a made-up instruction:
  validation refuses any kwargs that make the checker draw;
- langdetect (english_lowercase/capital, response_language) is seeded: the
  same reply always gets the same language.
The import takes ~2 s (nltk, lm_eval.api), so it happens on first use, once.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import io
import random
from dataclasses import dataclass
from types import ModuleType

from selftrain.errors import InputError

# Their check_following tokenizes with nltk's punkt (count_sentences, nltk.word_tokenize).
PUNKT_INSTRUCTIONS = frozenset({"length_constraints:number_sentences", "change_case:capital_word_frequency"})
PUNKT_INSTALL = "python -m nltk.downloader punkt_tab"
LM_EVAL_INSTALL = "pip install 'lm-eval[ifeval]==0.4.13'"

# Parameter types of the registered checkers' build_description (every other parameter is a string).
INT_PARAMS = frozenset({"num_sentences", "num_placeholders", "num_bullets", "num_highlights", "num_sections",
                        "num_paragraphs", "nth_paragraph", "num_words", "frequency", "let_frequency",
                        "capital_frequency"})
LIST_PARAMS = frozenset({"keywords", "forbidden_words"})


@dataclass(frozen=True)
class Checkers:
    registry: ModuleType  # lm_eval.tasks.ifeval.instructions_registry (INSTRUCTION_DICT, INSTRUCTION_CONFLICTS)
    utils: ModuleType  # lm_eval.tasks.ifeval.utils (InputExample, test_instruction_following_strict/_loose)
    punkt: bool  # nltk's punkt_tab data is installed: PUNKT_INSTRUCTIONS can be checked


def _no_download(*args, **kwargs) -> bool:
    return False


def punkt_available() -> bool:
    """Whether nltk's English punkt_tab model loads (an empty punkt_tab directory does not count)."""
    from nltk.tokenize.punkt import PunktTokenizer

    try:
        PunktTokenizer("english")
    except (LookupError, OSError, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=None)
def checkers() -> Checkers:
    """lm-eval's IFEval modules, imported once, without a download attempt or a false message."""
    try:
        import langdetect
        import nltk
    except ImportError as exc:
        raise InputError(f"the ifeval checks need lm-eval's IFEval extra ({exc}): {LM_EVAL_INSTALL}") from None
    langdetect.DetectorFactory.seed = 0
    real_download = nltk.download
    nltk.download = _no_download
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from lm_eval.tasks.ifeval import instructions_registry, utils
    except ImportError as exc:
        raise InputError(f"the ifeval checks need lm-eval ({exc}): {LM_EVAL_INSTALL}") from None
    finally:
        nltk.download = real_download
    return Checkers(instructions_registry, utils, punkt_available())


def instruction_ids() -> tuple[str, ...]:
    """Every instruction id lm-eval can check (IFEval's 25)."""
    return tuple(checkers().registry.INSTRUCTION_DICT)


def clean_kwargs(kwargs: dict) -> dict:
    """An instruction's kwargs as lm-eval passes them to build_description: falsy values dropped."""
    return {key: value for key, value in kwargs.items() if value}


def build(instruction_id: str, kwargs: dict):
    """lm-eval's checker for one instruction, built from explicit kwargs (validate them first)."""
    checker = checkers().registry.INSTRUCTION_DICT[instruction_id](instruction_id)
    checker.build_description(**clean_kwargs(kwargs))
    return checker


def validate_instructions(instruction_ids, kwargs_list) -> str | None:
    """What is wrong with an IFEval instruction list and its kwargs, or None.

    Unknown ids, kwargs lists of another length, parameters the checker does not
    take or of the wrong type, and kwargs that would make lm-eval draw a
    parameter at random are refused."""
    if not isinstance(instruction_ids, list) or not instruction_ids:
        return f"instruction_id_list: expected a non-empty list of instruction ids, got {instruction_ids!r}"
    if not isinstance(kwargs_list, list):
        return f"kwargs: expected a list of objects (one per instruction), got {kwargs_list!r}"
    if len(kwargs_list) != len(instruction_ids):
        return (f"kwargs: {len(kwargs_list)} entries for {len(instruction_ids)} instructions in "
                f"instruction_id_list (one object per instruction)")
    known = checkers().registry.INSTRUCTION_DICT
    for i, (instruction_id, kwargs) in enumerate(zip(instruction_ids, kwargs_list)):
        if not isinstance(instruction_id, str) or instruction_id not in known:
            close = difflib.get_close_matches(str(instruction_id), list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"instruction_id_list[{i}]: unknown IFEval instruction id {instruction_id!r}{hint}"
        if not isinstance(kwargs, dict):
            return f"kwargs[{i}]: expected an object, got {kwargs!r}"
        if (problem := _kwargs_problem(instruction_id, kwargs)) is not None:
            return f"kwargs[{i}]{problem}"
    return None


def _kwargs_problem(instruction_id: str, kwargs: dict) -> str | None:
    """What is wrong with one instruction's kwargs (".key: ..." or ": ..."), or None."""
    cls = checkers().registry.INSTRUCTION_DICT[instruction_id]
    params = list(inspect.signature(cls(instruction_id).build_description).parameters)
    given = clean_kwargs(kwargs)
    for key, value in given.items():
        if key not in params:
            takes = f"it takes {', '.join(params)}" if params else "it takes none"
            return f": {key!r} is not a parameter of {instruction_id} ({takes})"
        if (problem := _type_problem(key, value)) is not None:
            return f".{key}: {problem}"
    state = random.getstate()
    try:
        cls(instruction_id).build_description(**given)
        drew = random.getstate() != state
    except Exception as exc:  # lm-eval's own refusal (a bad relation, a missing prompt_to_repeat, ...)
        return f": {instruction_id} refuses {given}: {exc}"
    finally:
        random.setstate(state)  # the caller's global random stream is not ours to move
    if drew:
        return (f": {instruction_id} with {given} would get a random parameter from lm-eval (one is missing "
                f"or invalid); give each of {', '.join(params)} a valid value")
    return None


def _type_problem(key: str, value) -> str | None:
    if key in INT_PARAMS:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"expected an integer, got {value!r}"
    if key in LIST_PARAMS:
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        return None if ok else f"expected a list of words, got {value!r}"
    return None if isinstance(value, str) else f"expected a string, got {value!r}"


def availability_problem(instruction_ids: list[str]) -> str | None:
    """Why this machine cannot check one of the instructions (nltk data missing), or None."""
    if checkers().punkt:
        return None
    for i, instruction_id in enumerate(instruction_ids):
        if instruction_id in PUNKT_INSTRUCTIONS:
            return (f"instruction_id_list[{i}]: {instruction_id} needs nltk's punkt_tab data, which is not "
                    f"installed here: {PUNKT_INSTALL}")
    return None


def check_response(instruction_ids: list[str], kwargs_list: list[dict], prompt: str, response: str) -> dict:
    """{"strict": [...], "loose": [...]}: per instruction, whether the response follows it (lm-eval's rules).

    Bad instructions or kwargs, and instructions this machine cannot check, are an InputError."""
    problem = validate_instructions(instruction_ids, kwargs_list) or availability_problem(instruction_ids)
    if problem is not None:
        raise InputError(problem)
    utils = checkers().utils
    example = utils.InputExample(key=0, instruction_id_list=list(instruction_ids), prompt=prompt,
                                 kwargs=[dict(k) for k in kwargs_list])
    strict = utils.test_instruction_following_strict(example, response).follow_instruction_list
    loose = utils.test_instruction_following_loose(example, response).follow_instruction_list
    return {"strict": [bool(x) for x in strict], "loose": [bool(x) for x in loose]}


def ifeval_accuracies(rows: list[dict]) -> dict:
    """IFEval's four numbers over rows carrying `ifeval_strict` and `ifeval_loose` (lists of bools).

    Prompt level: the fraction of rows that follow all their instructions;
    instruction level: the fraction of all instructions followed. None without rows."""
    result: dict = {"n": len(rows)}
    for mode in ("strict", "loose"):
        lists = []
        for row in rows:
            followed = row.get(f"ifeval_{mode}")
            if not isinstance(followed, list) or not followed:
                raise InputError(f"record {row.get('id')}: ifeval_{mode}: missing (judge with the ifeval reward)")
            lists.append([bool(x) for x in followed])
        flat = [x for followed in lists for x in followed]
        result[f"prompt_level_{mode}"] = round(sum(all(f) for f in lists) / len(lists), 4) if lists else None
        result[f"instruction_level_{mode}"] = round(sum(flat) / len(flat), 4) if flat else None
    return {key: result[key] for key in ("prompt_level_strict", "instruction_level_strict",
                                         "prompt_level_loose", "instruction_level_loose", "n")}
