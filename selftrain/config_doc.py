"""The configuration reference (docs/configuration.md), generated from the config's own definitions.

Every key's type and default come from the dataclasses of selftrain/config.py; its help is the comment
on the key's own line (`seed: int = 0  # the help`), or, for a key that needs more than a line, the
comment lines directly above it. A key with neither stops the generator, naming its file and line:
each key is documented once, where it is defined. A section's text is its class docstring.

    python -m selftrain.config_doc docs/configuration.md     # what `make docs` runs
    python -m selftrain.config_doc                          # the page on stdout
"""
from __future__ import annotations

import ast
import dataclasses
import io
import json
import os
import sys
import tokenize
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from selftrain import config as config_module
from selftrain.errors import InputError, exit_code

SOURCE = Path(config_module.__file__)
SHOWN_SOURCE = "selftrain/config.py"
BANNER = "# ---"  # `# --- training ---` groups keys in the source; it is no key's help

HEADER = f"""# Configuration reference

<!-- Generated from {SHOWN_SOURCE} by `make docs`; edit the comments there, not this page. -->

Every key of a run's config (YAML or JSON). Precedence: the defaults below < the config file < (method
`distill`: the seed-003 `.env` names in the environment) < `--set key=value` and a stage's own flags.
Unknown keys and bad values stop a stage with one line naming the file and the key. Dotted keys reach
into sections (`--set dpo.beta=0.2`); `[]` marks a list of mappings (`datasets[].path`).
"""


def source_comments(text: str) -> dict[int, str]:
    """Line number -> the text of the comment on it."""
    return {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(text).readline)
            if tok.type == tokenize.COMMENT}


def _comment_text(comment: str) -> str:
    return comment.lstrip("#").strip()


def class_docs(text: str) -> dict[str, tuple[str, dict[str, tuple[str, int]]]]:
    """Class qualname -> (its docstring, field name -> (help, line)). A field's help is its trailing comment,
    else the comment lines directly above it (no blank line between, no `# ---` banner), else ""."""
    lines = text.splitlines()
    comments = source_comments(text)
    out: dict[str, tuple[str, dict[str, tuple[str, int]]]] = {}

    def visit(cls: ast.ClassDef, qualname: str) -> None:
        fields: dict[str, tuple[str, int]] = {}
        out[qualname] = (" ".join((ast.get_docstring(cls) or "").split()), fields)
        for node in cls.body:
            if isinstance(node, ast.ClassDef):
                visit(node, f"{qualname}.{node.name}")
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                trailing = comments.get(node.end_lineno)
                if trailing and lines[node.end_lineno - 1].lstrip().startswith("#"):
                    trailing = None  # a comment line of its own inside the statement, not a trailing one
                if trailing:
                    help_text = _comment_text(trailing)
                else:
                    block = []
                    number = node.lineno - 1
                    while number >= 1 and lines[number - 1].lstrip().startswith("#") \
                            and not lines[number - 1].lstrip().startswith(BANNER):
                        block.insert(0, _comment_text(lines[number - 1].strip()))
                        number -= 1
                    help_text = " ".join(block)
                fields[node.target.id] = (help_text, node.lineno)

    for node in ast.parse(text).body:
        if isinstance(node, ast.ClassDef):
            visit(node, node.name)
    return out


def type_name(kind: Any) -> str:
    if get_origin(kind) is list:
        (item,) = get_args(kind)
        return f"list[{type_name(item)}]"
    return kind.__name__


def shown_value(value: Any) -> str:
    """A default as it would be written in a YAML config."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text  # YAML reads 5e-05 as a string
    if isinstance(value, (int, str)):
        return json.dumps(value) if isinstance(value, str) else str(value)
    return json.dumps(value)


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()


def cell(text: str) -> str:
    """Text inside a table cell: its pipes escaped."""
    return text.replace("|", r"\|").replace("\n", " ")


def prose(text: str) -> str:
    """Help text outside code spans: a `<split>` would be read as an HTML tag and vanish."""
    return cell(text).replace("<", "&lt;")


def sections(cls, prefix: str = "") -> list[tuple[str, type]]:
    """(dotted prefix, class) of `cls` and of every section below it, in the order of the source."""
    found = [(prefix, cls)]
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        item = get_args(kind)[0] if get_origin(kind) is list else None
        if dataclasses.is_dataclass(kind):
            found += sections(kind, f"{prefix}{f.name}.")
        elif item is not None and dataclasses.is_dataclass(item):
            found += sections(item, f"{prefix}{f.name}[].")
    return found


def render(text: str | None = None) -> str:
    """The page. Raises InputError naming config.py's line for a key without help."""
    text = SOURCE.read_text(encoding="utf-8") if text is None else text
    docs = class_docs(text)
    missing = []
    parts = [HEADER]
    for prefix, cls in sections(config_module.Config):
        hints = get_type_hints(cls)
        doc, own = docs[cls.__qualname__]
        rows = []
        for f in dataclasses.fields(cls):
            help_text, line = own.get(f.name, ("", 0))
            if not help_text:
                missing.append(f"{SHOWN_SOURCE}:{line}: {cls.__qualname__}.{f.name}")
            kind = hints[f.name]
            item = get_args(kind)[0] if get_origin(kind) is list else None
            if dataclasses.is_dataclass(kind) or (item is not None and dataclasses.is_dataclass(item)):
                name = f"{prefix}{f.name}{'[]' if item else ''}"
                kind_shown, default = ("list of mappings", "`[]`") if item else ("section", "")
                rows.append(f"| [`{name}`](#{anchor(name)}) | {kind_shown} | {default} | {prose(help_text)} |")
            else:
                rows.append(f"| `{prefix}{f.name}` | {type_name(kind)} | `{cell(shown_value(default_of(f)))}` "
                            f"| {prose(help_text)} |")
        title = "Top-level keys" if not prefix else f"`{prefix.rstrip('.')}`"
        parts.append(f"## {title}\n")
        if doc:
            parts.append(prose(doc) + "\n")
        parts.append("| key | type | default | help |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
    if missing:
        raise InputError("keys without help (add a comment on the key's line, or the lines above it): "
                         + "; ".join(missing))
    return "\n".join(parts)


def anchor(section: str) -> str:
    """The anchor GitHub gives the heading `## `<section>`` (lower case, punctuation but - and _ dropped)."""
    return "".join(c for c in section.lower() if c.isalnum() or c in "-_")


def write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    def command(args: list[str]) -> None:
        if len(args) > 1 or (args and args[0].startswith("-")):
            raise InputError("usage: python -m selftrain.config_doc [OUTPUT.md]")
        page = render()
        if args:
            write_atomic(Path(args[0]), page)
        else:
            sys.stdout.write(page)

    return exit_code(command, argv)


if __name__ == "__main__":
    raise SystemExit(main())
