"""What a Markdown page or a recipe's header names, and what the Makefile defines: shared by
tests/test_docs.py and tests/test_recipes.py (tests/ is on sys.path).

- paths under configs/, recipes/, scripts/, slurm/ anywhere in the text; a path with a `<placeholder>`
  is not checked, one with `*` must match a file;
- `make <target>` in code (fenced blocks and inline code spans, where a command is written), not in prose
  ("make the judge read"); file targets (`make results/<run>/...`) are not checked;
- relative links `[text](path#anchor)` outside code, with the anchors of Markdown headings.
"""
from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PATH_ROOTS = ("configs", "recipes", "scripts", "slurm")
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w.*<>/-]*)" % "|".join(PATH_ROOTS))
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)*)`")  # a span may wrap onto the next line, never past a blank one
MAKE = re.compile(r"(?:^|[\s;&|(])make((?:[ \t]+[^\s;&|#`)]+)*)")
MAKE_OPTIONS_WITH_ARGUMENT = ("-C", "-f", "-I", "-o", "-W")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


@dataclass(frozen=True)
class Ref:
    file: str  # relative to the repository
    line: int
    kind: str  # path | make | link
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind} {self.text}"


def clean_make_env() -> dict:
    """The environment for a make of our own: none of an outer make's flags (MAKEFLAGS, MAKELEVEL, a jobserver)
    nor the Makefile's variables (CONFIG, RUN, RESULTS, ...), which the environment would set."""
    return {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}


@functools.lru_cache(maxsize=1)
def make_targets() -> frozenset[str]:
    """The targets the Makefile defines a rule for (prerequisites or a recipe), from make's own database
    (`make -pRrq`: nothing is run). A name only listed in .PHONY is no target."""
    out = subprocess.run(["make", "-pRrq", "-f", "Makefile"], cwd=REPO, env=clean_make_env(),
                         capture_output=True, text=True, timeout=60).stdout
    files = out.split("\n# Files\n", 1)
    assert len(files) == 2, f"make -pRrq printed no database:\n{out[-2000:]}"
    targets = set()
    for entry in files[1].split("\n\n"):  # one entry per file, a blank line after each
        lines = entry.strip("\n").splitlines()
        if not lines or lines[0] == "# Not a target:":
            continue
        m = re.match(r"^([^\s#%][^:=]*?):(?!=)(.*)$", lines[0])
        if m and (m.group(2).strip() or any(line.startswith("\t") for line in lines[1:])):
            targets.update(m.group(1).split())
    return frozenset(targets)


def _code_and_prose(text: str) -> tuple[list[tuple[int, str]], str]:
    """(line, code) for every line of a fenced block and every inline span, and the text with fenced blocks
    blanked (line numbers kept)."""
    code, prose_lines, fenced = [], [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            prose_lines.append("")
        elif fenced:
            code.append((number, re.sub(r"(^|\s)#.*", "", line)))  # a shell comment is prose
            prose_lines.append("")
        else:
            prose_lines.append(line)
    prose = "\n".join(prose_lines)
    for m in INLINE_CODE.finditer(prose):
        code.append((prose.count("\n", 0, m.start()) + 1, m.group(1)))
    return code, prose


def make_targets_named(code: str) -> list[str]:
    """The targets of every `make` command in a piece of code: the words after `make` that are no option and
    no VAR=value. A word ending in `:` `,` `.` `;` ends the command (prose in a text block: "make
    distill-checks: attribution ..."); a file target or a placeholder (`/`, `<`, `$`) is left out."""
    found = []
    for m in MAKE.finditer(code):
        skip = False
        try:
            words = shlex.split(m.group(1))  # BENCH_ARGS="--paths a,b" is one word
        except ValueError:  # a quote that closes after the span
            words = m.group(1).split()
        for word in words:
            if skip:
                skip = False
            elif word in MAKE_OPTIONS_WITH_ARGUMENT:
                skip = True
            elif word.startswith("-") or "=" in word or word == "\\":
                continue
            else:
                target = word.rstrip(":,.;")
                if not re.search(r"[/<$]", target):
                    found.append(target)
                if target != word:
                    break
    return found


def paths_named(text: str) -> list[tuple[int, str]]:
    """(line, path) of every configs/, recipes/, scripts/, slurm/ path, trailing punctuation dropped."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for m in PATH.finditer(line):
            found.append((number, m.group(1).rstrip(".,:;")))
    return found


def refs(path: Path, name: str | None = None) -> list[Ref]:
    """Every reference of a page; `name`: where it stands in the repository (links resolve from there)."""
    text = path.read_text(encoding="utf-8")
    name = name or str(path.relative_to(REPO))
    found = [Ref(name, number, "path", p) for number, p in paths_named(text)]
    code, prose = _code_and_prose(text)
    for number, piece in code:
        found += [Ref(name, number, "make", target) for target in make_targets_named(piece)]
    blanked = INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose)
    for number, line in enumerate(blanked.splitlines(), 1):
        found += [Ref(name, number, "link", m.group(1)) for m in LINK.finditer(line)]
        if m := re.match(r"^\s*\[[^\]]+\]:\s*(\S+)", line):  # a reference-style link definition
            found.append(Ref(name, number, "link", m.group(1)))
    return sorted(found, key=lambda r: (r.line, r.kind, r.text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation (but - and _) dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (a repeated heading gets -1, -2, ...)."""
    found, counts, fenced = set(), {}, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := HEADING.match(line)):
            base = slug(m.group(1))
            found.add(f"{base}-{counts[base]}" if base in counts else base)
            counts[base] = counts.get(base, 0) + 1
    return found


def problem(ref: Ref) -> str | None:
    """What is wrong with a reference, or None when it resolves."""
    if ref.kind == "path":
        if "<" in ref.text:
            return None  # a placeholder: configs/<yours>.yaml
        if "*" in ref.text:
            return None if list(REPO.glob(ref.text)) else "no file matches"
        return None if (REPO / ref.text).exists() else "no such file or directory"
    if ref.kind == "make":
        return None if ref.text in make_targets() else "no such target in the Makefile"
    target = ref.text
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        return None
    file_part, _, anchor = target.partition("#")
    source = REPO / ref.file
    resolved = (source.parent / file_part).resolve() if file_part else source
    if not resolved.is_relative_to(REPO):
        return "outside the repository (a git host cannot show it)"
    if not resolved.exists():
        return "no such file or directory"
    if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
        return f"no heading with the anchor #{anchor} in {resolved.relative_to(REPO)}"
    return None
