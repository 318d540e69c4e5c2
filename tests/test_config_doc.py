"""docs/configuration.md is generated from selftrain/config.py: it is up to date, it lists every key with
its true default, and a key without help stops the generator."""
import dataclasses
import re
from pathlib import Path
from typing import get_args, get_origin, get_type_hints

import pytest
import yaml

from selftrain import config_doc
from selftrain.config import Config
from selftrain.errors import InputError

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "configuration.md"
ROW = re.compile(r"^\| \[?`([^`]+)`(?:\]\(#[^)]*\))? \| ([^|]+) \| (`(?:[^`]|\\\|)*`)? ?\|")


def keys_and_defaults(cls=Config, prefix: str = "") -> dict[str, object]:
    """Every key below `cls`, dotted (`[]` for a list of sections), with its default; sections as None."""
    out = {}
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        item = get_args(kind)[0] if get_origin(kind) is list else None
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(kind):
            out[prefix + f.name] = None
            out.update(keys_and_defaults(kind, f"{prefix}{f.name}."))
        elif item is not None and dataclasses.is_dataclass(item):
            out[prefix + f.name + "[]"] = default
            out.update(keys_and_defaults(item, f"{prefix}{f.name}[]."))
        else:
            out[prefix + f.name] = default
    return out


def test_the_page_is_up_to_date():
    assert PAGE.is_file(), "docs/configuration.md is missing: run `make docs`"
    assert PAGE.read_text(encoding="utf-8") == config_doc.render(), \
        "docs/configuration.md is out of date with selftrain/config.py: run `make docs` and commit it"


def test_every_key_has_a_row_with_its_default_as_yaml():
    rows = {}
    for line in config_doc.render().splitlines():
        if (m := ROW.match(line)) and m.group(1) != "key":
            rows[m.group(1)] = m.group(3)
    expected = keys_and_defaults()
    assert sorted(rows) == sorted(expected)
    assert len(expected) > 150  # the walk reached the sections
    for key, default in expected.items():
        if default is None:  # a section: its keys have their own rows
            assert rows[key] is None, key
            continue
        shown = rows[key][1:-1].replace(r"\|", "|")
        assert yaml.safe_load(shown) == default, f"{key}: the page shows {shown}, the default is {default!r}"
    assert rows["dpo.learning_rate"] == "`5.0e-05`"  # YAML reads 5e-05 as a string, 5.0e-05 as a number
    assert rows["distill.teacher_generation.api"] == '`"completions"`'


def test_help_is_the_trailing_comment_else_the_block_above():
    source = '''
class Section:
    """What the section is for."""

    # --- a banner groups keys; it is no key's help
    plain: int = 1
    trailing: int = 2  # the trailing comment
    # the comment block above,
    # over two lines
    above: str = "x"
    # a block above loses to the trailing comment
    both: float = 0.5  # the trailing one wins

    class Inner:
        deep: bool = True  # nested classes count too
'''
    docs = config_doc.class_docs(source)
    doc, fields = docs["Section"]
    assert doc == "What the section is for."
    assert fields == {"plain": ("", 6), "trailing": ("the trailing comment", 7),
                      "above": ("the comment block above, over two lines", 10),
                      "both": ("the trailing one wins", 12)}
    assert docs["Section.Inner"][1] == {"deep": ("nested classes count too", 15)}


def test_a_key_without_help_stops_the_generator_naming_its_line():
    text = config_doc.SOURCE.read_text(encoding="utf-8")
    line = "    lora_r: int = 16  # LoRA rank\n"
    assert text.count(line) == 1
    number = text[: text.index(line)].count("\n") + 1
    with pytest.raises(InputError, match=rf"^keys without help .*: selftrain/config.py:{number}: Config.lora_r$"):
        config_doc.render(text.replace(line, "    lora_r: int = 16\n"))


def test_help_outside_code_keeps_angle_brackets_and_pipes():
    page = config_doc.render()
    assert "a folder of &lt;split&gt;.jsonl" not in page  # only "<" needs escaping
    assert "| a JSONL / JSON file, a folder of &lt;split>.jsonl, or a hub id (required) |" in page
    assert r"| local \| api \| script \| rule_based |" in page


def test_the_command_writes_the_page_and_refuses_bad_arguments(tmp_path, capsys):
    out = tmp_path / "configuration.md"
    assert config_doc.main([str(out)]) == 0
    assert out.read_text(encoding="utf-8") == config_doc.render()
    assert not list(tmp_path.glob("*.partial"))
    assert config_doc.main(["a.md", "b.md"]) == 2
    assert capsys.readouterr().err == "error: usage: python -m selftrain.config_doc [OUTPUT.md]\n"
