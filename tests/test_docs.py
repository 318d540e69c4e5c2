"""README.md and docs/**/*.md cannot rot silently: every configs/, recipes/, scripts/, slurm/ path they name
exists, every `make <target>` they show is a target of the Makefile, and every relative link (and its
#anchor) resolves. One test per reference, named by file, line and the thing named (tests/doc_refs.py
says what counts as a reference)."""
import pytest

from doc_refs import REPO, Ref, make_targets, make_targets_named, paths_named, problem, refs, slug

PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("**/*.md"))
REFS = [ref for page in PAGES for ref in refs(page)]


@pytest.mark.parametrize("ref", REFS, ids=str)
def test_reference_resolves(ref):
    assert problem(ref) is None, f"{ref}: {problem(ref)}"


def test_the_pages_name_things_at_all():
    """An extractor that finds nothing would pass every page: the README names paths, targets and the
    configuration page links to its sections."""
    kinds = {(ref.file, ref.kind) for ref in REFS}
    assert {("README.md", "path"), ("README.md", "make"), ("docs/configuration.md", "link")} <= kinds
    assert {"demo", "test", "rounds", "docs"} <= {ref.text for ref in REFS if ref.kind == "make"}


def test_makefile_targets_come_from_make_itself():
    targets = make_targets()
    assert {"demo", "test", "rounds", "iter", "report", "submit", "setup-vllm", "docs"} <= targets
    assert "help" in targets and "results" not in targets


def test_make_commands_in_code():
    assert make_targets_named("make demo    # sets up .venv") == ["demo"]
    assert make_targets_named("make -n rounds CONFIG=configs/demo.yaml RUN=x && make report") == ["rounds", "report"]
    assert make_targets_named("make -C sub iter N=2; cd ..") == ["iter"]
    assert make_targets_named("make results/<run>/iter_01/judged.done") == []  # a file target: not checked
    assert make_targets_named("make distill-checks: attribution (iterations 2 and ROUNDS)") == ["distill-checks"]
    assert make_targets_named("make bench --paths hf,selftrain") == ["bench", "hf,selftrain"]  # caught: no target
    assert make_targets_named('make bench BENCH_ARGS="--paths hf,selftrain"') == ["bench"]
    assert make_targets_named("$(MAKE) --no-print-directory report") == []


def test_prose_is_not_a_command_but_code_is(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Pairs that score differently make the judge read the reply.\n"
        "Run `make demo`, then see configs/demo.yaml, configs/<yours>.yaml and [the reference](configuration.md#dpo).\n"
        "```bash\n"
        "make rounds CONFIG=recipes/none.yaml   # make nothing of this comment\n"
        "[not a link](nowhere.md)\n"
        "```\n"
        "[missing](configuration.md#no-such-section) and `[code](x.md)` and [web](https://example.org)\n",
        encoding="utf-8")
    found = [(r.line, r.kind, r.text) for r in refs(page, "docs/page.md")]
    assert found == [(2, "link", "configuration.md#dpo"), (2, "make", "demo"), (2, "path", "configs/<yours>.yaml"),
                     (2, "path", "configs/demo.yaml"), (4, "make", "rounds"), (4, "path", "recipes/none.yaml"),
                     (7, "link", "configuration.md#no-such-section"), (7, "link", "https://example.org")]
    problems = {text: problem(Ref("docs/page.md", line, kind, text)) for line, kind, text in found}
    assert problems == {"configuration.md#dpo": None, "demo": None, "configs/<yours>.yaml": None,
                        "configs/demo.yaml": None, "rounds": None,
                        "recipes/none.yaml": "no such file or directory",
                        "configuration.md#no-such-section":
                            "no heading with the anchor #no-such-section in docs/configuration.md",
                        "https://example.org": None}


def test_paths_and_links_that_do_not_resolve():
    assert paths_named("see configs/accelerate/*.yaml, or slurm/iter.sh.") == [
        (1, "configs/accelerate/*.yaml"), (1, "slurm/iter.sh")]
    assert paths_named("results/configs/x .venv/configs/y") == []  # inside another path
    assert problem(Ref("README.md", 1, "path", "configs/accelerate/*.yaml")) is None
    assert problem(Ref("README.md", 1, "path", "configs/accelerate/*.json")) == "no file matches"
    assert problem(Ref("README.md", 1, "link", "../shared/README.md")) == \
        "outside the repository (a git host cannot show it)"
    assert problem(Ref("README.md", 1, "make", "deploy")) == "no such target in the Makefile"


def test_heading_anchors_as_a_git_host_makes_them():
    assert slug("`dpo.schedule[]`") == "dposchedule"
    assert slug("Expert Iteration: does filtering help? (seed 002)") == "expert-iteration-does-filtering-help-seed-002"
    assert slug("Self-Rewarding (seed 004)") == "self-rewarding-seed-004"
