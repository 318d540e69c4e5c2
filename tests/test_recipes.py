"""The seeds' own experiments (recipes/*.yaml) cannot run here (GPUs, hub models, an API key), so each is
checked as far as it can be without them: it loads through the config loader and passes the runnability
checks, the local files it names exist, its header says the hardware, the seed's expected figures and the
command that runs it, and `make -n` plans that command and `make rounds` (a dry run: the stage commands
are printed, never run, into a results folder in tmp) as the chain of the recipe's method."""
import re
import subprocess
from pathlib import Path

import pytest

from doc_refs import INLINE_CODE, REPO, Ref, clean_make_env, make_targets, make_targets_named, paths_named, problem
from selftrain.checks import check_runnable
from selftrain.config import DISTILL_ENV, Config, load_config

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
# the seeds' experiments, one recipe each (seed 000 is the config format every recipe is written in)
EXPECTED = {"star-gsm8k-llama3.2-3b.yaml": "star", "expert-iteration-gsm8k-llama3.2-3b.yaml": "expert_iteration",
            "self-rewarding-llama3-8b.yaml": "self_rewarding", "distill-strategyqa-phi3.5-mini.yaml": "distill"}
# a stage only the method's chain runs, and one it never runs (mk/<method>.mk)
CHAIN = {"star": ("rationalize.py", "pairs.py"), "expert_iteration": ("select_data.py", "rationalize.py"),
         "self_rewarding": ("llm_judge.py", "rationalize.py"), "distill": ("teacher.py", "rationalize.py")}
# config keys that name a local file or folder (a hub id, `org/name` with no file suffix, is not checked)
FILE_KEYS = ("datasets[].path", "test_file", "few_shot_file", "reward_config.script_path", "self_rewarding.ift_file",
             "self_rewarding.eft_file", "self_rewarding.judge_template", "self_rewarding.self_instruct_file",
             "distill.dataset")
HEADER_FIELDS = ("hardware", "expected", "run")
HUB_ID = re.compile(r"^[\w-][\w.-]*/[\w.-]+$")


def header(path: Path) -> dict[str, str]:
    """`# field: text` (or `# field (source): text`) lines of the leading comment, continuation lines joined."""
    fields, current = {}, None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        m = re.match(r"^# (\w+)( \([^)]*\))?:\s+(.*)$", line)
        if m:
            current = m.group(1)
            fields[current] = (m.group(2) or "").strip() + " " + m.group(3)
        elif current and line.startswith("#  "):
            fields[current] += " " + line[1:].strip()
        else:
            current = None
    return fields


def values(config: Config, key: str) -> list[str]:
    node = [config]
    for part in key.split("."):
        name = part.removesuffix("[]")
        node = [getattr(n, name) for n in node]
        if part.endswith("[]"):
            node = [item for n in node for item in n]
    return [v for v in node if v]


def make_n(args: list[str], results: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-n", *args, f"RESULTS={results}"], cwd=REPO, env=clean_make_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(autouse=True)
def no_seed_env(monkeypatch):
    """The seed-003 `.env` names override a distill config from the environment: none here."""
    for name in DISTILL_ENV:
        monkeypatch.delenv(name, raising=False)


def test_every_seed_experiment_has_its_recipe():
    assert sorted(p.name for p in RECIPES) == sorted(EXPECTED)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_and_its_files_exist(path):
    name = str(path.relative_to(REPO))
    config = load_config(name)
    assert config.method == EXPECTED[path.name]
    assert config.name == path.stem  # the run folder and the recipe share a name
    check_runnable(config, name)
    for key in FILE_KEYS:
        for value in values(config, key):
            if not (HUB_ID.match(value) and not Path(value).suffix):
                assert (REPO / value).exists(), f"{name}: {key}: {value} does not exist (relative to the repository)"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_header_says_hardware_figures_and_command(path):
    name = str(path.relative_to(REPO))
    fields = header(path)
    missing = [f for f in HEADER_FIELDS if f not in fields]
    assert not missing, f"{name}: its header has no {', '.join(f + ':' for f in missing)} line"
    assert re.search(r"\d+ GB", fields["hardware"]), f"{name}: hardware: names no memory size"
    assert re.search(r"\d%|\d\.\d", fields["expected"]) and "seed 00" in fields["expected"], \
        f"{name}: expected: gives no figure of its seed"
    commands = [c.strip() for c in fields["run"].split("&&")]
    assert all(c.startswith("make ") for c in commands) and any(f"CONFIG={name}" in c for c in commands), \
        f"{name}: run: {fields['run']!r} is not a make command with CONFIG={name}"
    text = "\n".join(f"# {k}: {v}" for k, v in fields.items())
    for number, ref in paths_named(text):
        assert problem(Ref(name, number, "path", ref)) is None, f"{name}: its header names {ref}, which does not exist"
    code = [fields["run"], fields.get("then", "")] + INLINE_CODE.findall(text)  # the commands: run:, then:, `...`
    targets = [target for piece in code for target in make_targets_named(piece)]
    assert targets and all(t in make_targets() for t in targets), f"{name}: its header runs make {targets}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_make_plans_the_recipe_without_running_it(path, tmp_path):
    name = str(path.relative_to(REPO))
    config = load_config(name)
    results = tmp_path / "results"
    plan = make_n(["rounds", f"CONFIG={name}"], results)
    assert plan.returncode == 0, f"make -n rounds CONFIG={name}:\n{plan.stdout[-3000:]}\n{plan.stderr[-3000:]}"
    run_dir = f"--run_dir {results}/{path.stem}"
    for i in range(config.num_rounds + 1):
        assert re.search(rf"--config {re.escape(name)} {re.escape(run_dir)} --iteration {i}\b", plan.stdout), \
            f"make -n rounds CONFIG={name} plans nothing for iteration {i}:\n{plan.stdout[-3000:]}"
    runs, never = CHAIN[config.method]
    assert f" {runs} " in plan.stdout and f" {never} " not in plan.stdout, plan.stdout[-3000:]
    assert not results.exists()  # planned, not run
    # the header's own commands (run:, then:), planned the same way
    fields = header(path)
    for command in (fields["run"] + " && " + fields.get("then", "")).split("&&"):
        words = command.split()
        if not words or words[0] != "make":
            continue
        plan = make_n(words[1:], results)
        assert plan.returncode == 0, f"make -n {' '.join(words[1:])}:\n{plan.stdout[-3000:]}\n{plan.stderr[-3000:]}"
        assert f"{results}/{path.stem}" in plan.stdout, plan.stdout[-3000:]
    assert not results.exists()


def test_a_broken_recipe_fails_the_loader_and_the_plan(tmp_path):
    """What the tests above rely on: an unknown key stops the loader and make -n, with the file and the key."""
    bad = REPO / "recipes" / "star-gsm8k-llama3.2-3b.yaml"
    broken = tmp_path / "broken.yaml"
    broken.write_text(bad.read_text(encoding="utf-8").replace("num_train_epochs:", "num_train_epoch:"),
                      encoding="utf-8")
    with pytest.raises(Exception, match=r"unknown key 'num_train_epoch' \(did you mean 'num_train_epochs'\?\)"):
        load_config(broken)
    plan = make_n(["rounds", f"CONFIG={broken}"], tmp_path / "results")
    assert plan.returncode != 0
    assert f"error: {broken}: unknown key 'num_train_epoch'" in plan.stderr
