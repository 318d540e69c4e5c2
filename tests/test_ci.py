"""CI is green only if the SLURM tests ran: `.ci/run` fails when SLURM does not come up, and under it
(SELFTRAIN_REQUIRE_SLURM=1) every test of tests/test_slurm.py errors instead of skipping when no cluster answers.

`.ci/run` runs from a copy in tmp_path with a fake ../shared/tools/slurm-local.sh (it logs each call and
fails `up` when told to) and a fake `make` first on PATH (it logs its arguments and the variable), so no
cluster starts and no test suite runs. tests/test_slurm.py runs in a pytest subprocess with no sbatch on
PATH: whatever this machine has, no job is submitted.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE_SLURM = """#!/bin/bash
echo "slurm $1" >> "$CI_LOG"
[ "$1" != up ] || exit "${FAKE_UP_RC:-0}"
"""
FAKE_MAKE = """#!/bin/bash
echo "make $* SELFTRAIN_REQUIRE_SLURM=${SELFTRAIN_REQUIRE_SLURM:-unset}" >> "$CI_LOG"
exit "${FAKE_MAKE_RC:-0}"
"""


def ci_tree(tmp_path: Path, with_slurm: bool = True) -> Path:
    """<tmp>/repo/.ci/run beside <tmp>/shared/tools/slurm-local.sh, and a fake make in <tmp>/bin."""
    (tmp_path / "repo" / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", tmp_path / "repo" / ".ci" / "run")
    if with_slurm:
        (tmp_path / "shared" / "tools").mkdir(parents=True)
        (tmp_path / "shared" / "tools" / "slurm-local.sh").write_text(FAKE_SLURM)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "make").write_text(FAKE_MAKE)
    (tmp_path / "bin" / "make").chmod(0o755)
    return tmp_path


def ci_run(root: Path, **env) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = root / "ci.log"
    environ = {**{k: v for k, v in os.environ.items() if k != "SELFTRAIN_REQUIRE_SLURM"},
               "PATH": f"{root / 'bin'}:{os.environ['PATH']}", "CI_LOG": str(log), **env}
    proc = subprocess.run(["bash", str(root / "repo" / ".ci" / "run")], env=environ, capture_output=True,
                          text=True, timeout=60)
    return proc, log.read_text().splitlines() if log.exists() else []


def test_ci_runs_the_tests_with_slurm_required_and_stops_the_cluster(tmp_path):
    proc, calls = ci_run(ci_tree(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert calls == ["slurm up", "make test SELFTRAIN_REQUIRE_SLURM=1", "slurm down"]


def test_ci_fails_before_the_tests_when_slurm_does_not_come_up(tmp_path):
    proc, calls = ci_run(ci_tree(tmp_path), FAKE_UP_RC="1")
    assert proc.returncode != 0
    assert calls == ["slurm up", "slurm down"]  # no make test, and whatever did start is stopped
    assert "SLURM did not come up" in proc.stderr


def test_ci_fails_without_the_slurm_script_and_with_failing_tests(tmp_path):
    proc, calls = ci_run(ci_tree(tmp_path / "a", with_slurm=False))
    assert proc.returncode == 2 and calls == [] and "slurm-local.sh: missing" in proc.stderr
    proc, calls = ci_run(ci_tree(tmp_path / "b"), FAKE_MAKE_RC="1")
    assert proc.returncode == 1 and calls == ["slurm up", "make test SELFTRAIN_REQUIRE_SLURM=1", "slurm down"]


@pytest.mark.parametrize("required, outcome", [(False, "skipped"), (True, "error")])  # error: in their fixture
def test_the_slurm_tests_skip_without_a_cluster_and_error_when_ci_requires_one(tmp_path, required, outcome):
    env = {k: v for k, v in os.environ.items() if k not in ("SELFTRAIN_REQUIRE_SLURM", "PYTEST_ADDOPTS")}
    env["PATH"] = str(tmp_path)  # an empty folder: no sbatch, no sinfo
    if required:
        env["SELFTRAIN_REQUIRE_SLURM"] = "1"
    # the five tests against a cluster (marked slow); submit.sh's refusals need none and run apart
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider",
                           "-m", "slow", "tests/test_slurm.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    counts = dict((kind, int(n)) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)s?\b", proc.stdout))
    assert counts == {outcome: 5}, proc.stdout[-3000:]
    assert "no sbatch on PATH" in proc.stdout
    assert proc.returncode == (1 if required else 0)
