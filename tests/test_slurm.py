"""The SLURM wrappers against a real slurmctld (../shared/tools/slurm-local.sh up brings one up).

Skipped, with the reason shown, when no cluster answers; an error instead under SELFTRAIN_REQUIRE_SLURM=1
(.ci/run sets it: CI is not green without them). Jobs run the real
embedded model on a few problems; the node has 2 CPUs and every job asks for
2, so jobs run one at a time, in submission order when they are free to start.
submit.sh's refusals that stop before any sbatch call run without a cluster: a
recording sbatch first on PATH shows that nothing was submitted.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DONE_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
CONFIG = {
    "name": "slurm", "base_model_path": "smollm2-135m",
    "task": {"name": "arithmetic", "difficulties": ["easy"], "n_train": 6, "n_test": 4, "seed": 0},
    "k": 1, "num_generations_per_prompt": 2, "max_new_tokens": 24, "batch_size": 16, "eval_batch_size": 16,
    "num_train_epochs": 1, "train_batch_size": 4,
}


def _cluster_answers() -> str | None:
    if not shutil.which("sbatch"):
        return "no sbatch on PATH (start a cluster with ../shared/tools/slurm-local.sh up)"
    try:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: no slurmctld answers"
    if state.returncode != 0 or not state.stdout.strip():
        return f"no SLURM cluster answers: {state.stderr.strip() or 'sinfo printed nothing'}"
    return None


NO_CLUSTER = _cluster_answers()
REQUIRED = os.environ.get("SELFTRAIN_REQUIRE_SLURM") == "1"  # set by .ci/run: there a missing cluster is a failure


@pytest.fixture
def cluster():
    """With SELFTRAIN_REQUIRE_SLURM=1 a cluster that does not answer is an error in each test, not a skip."""
    if NO_CLUSTER is not None:
        pytest.fail(f"SELFTRAIN_REQUIRE_SLURM=1 but {NO_CLUSTER}", pytrace=False)


def needs_cluster(test):
    """A test against the real slurmctld: skipped with the reason when none answers, unless REQUIRED."""
    if REQUIRED:
        return pytest.mark.usefixtures("cluster")(test)
    return pytest.mark.skipif(NO_CLUSTER is not None, reason=str(NO_CLUSTER))(test)


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items()
            if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES") and not k.startswith("SLURM_")}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=1800, **kwargs)


def sbatch(*args: str) -> str:
    proc = run(["sbatch", "--parsable", *args])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def job_info(job: str) -> list[dict]:
    """scontrol's records for a job (several for an array), as key -> value."""
    proc = run(["scontrol", "show", "job", job, "-o"])
    if proc.returncode != 0:
        return []
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in proc.stdout.splitlines() if line.strip()]


def wait(jobs: list[str], timeout: float = 900) -> dict[str, str]:
    """Poll until every job (every task of an array) has ended; its final state per job id."""
    deadline = time.monotonic() + timeout
    while True:
        states = {job: [r["JobState"] for r in job_info(job)] for job in jobs}
        if all(s and all(x in DONE_STATES for x in s) for s in states.values()):
            return {job: ("COMPLETED" if all(x == "COMPLETED" for x in s) else ",".join(sorted(set(s))))
                    for job, s in states.items()}
        assert time.monotonic() < deadline, f"jobs still running after {timeout}s: {states}"
        time.sleep(2)


def write_config(path: Path, **extra) -> Path:
    path.write_text(json.dumps({**CONFIG, **extra}))
    return path


def files_of(run_dir: Path) -> set[str]:
    """Relative paths with timestamps folded, logs left out: what a run leaves."""
    return {re.sub(r"_\d{8}-\d{6}", "_TS", str(p.relative_to(run_dir)))
            for p in run_dir.rglob("*") if p.is_file() and p.relative_to(run_dir).parts[0] != "logs"}


def stage_file(run_dir: Path, n: int, stage: str) -> Path:
    it = run_dir / f"iter_{n:02d}"
    return it / json.loads((it / f"{stage}.done").read_text())["output"]


@pytest.mark.slow
@needs_cluster
def test_one_iteration_with_sbatch_leaves_what_bash_and_make_leave(tmp_path):
    config = write_config(tmp_path / "slurm.json")
    local = run(["bash", "slurm/iter.sh", f"CONFIG={config}", "N=1", "RUN=local", f"RESULTS={tmp_path}"])
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    job = sbatch("--output", str(tmp_path / "slurm-%j.out"), "slurm/iter.sh", f"CONFIG={config}", "N=1",
                 "RUN=batch", f"RESULTS={tmp_path}")
    assert wait([job]) == {job: "COMPLETED"}, (tmp_path / f"slurm-{job}.out").read_text()[-3000:]
    local_dir, batch_dir = tmp_path / "local", tmp_path / "batch"
    assert files_of(batch_dir) == files_of(local_dir)
    assert "iter_01/model/model.safetensors" in files_of(batch_dir)
    for stage in ("samples", "judged", "train"):  # seeded per request: the same records, byte for byte
        assert stage_file(batch_dir, 1, stage).read_bytes() == stage_file(local_dir, 1, stage).read_bytes(), stage
    log = (batch_dir / "logs" / f"iter_01_{job}.log").read_text()
    assert f"job {job}" in log and "iteration 1 of batch done" in log
    assert "job none (not under SLURM)" in next((local_dir / "logs").glob("iter_01_local.log")).read_text()


@pytest.mark.slow
@needs_cluster
def test_chain_of_two_iterations_runs_in_order(tmp_path):
    config = write_config(tmp_path / "chain.json")
    proc = run(["bash", "scripts/submit.sh", f"CONFIG={config}", "RUN=chain", f"RESULTS={tmp_path}",
                "FROM=1", "TO=2"])
    assert proc.returncode == 0, proc.stderr
    jobs = [line.split()[0] for line in proc.stdout.splitlines()]
    assert [line.split(" ", 1)[1] for line in proc.stdout.splitlines()] == ["iteration 1", "iteration 2"]
    assert job_info(jobs[1])[0]["Dependency"].startswith(f"afterok:{jobs[0]}")
    assert wait(jobs) == {j: "COMPLETED" for j in jobs}
    first, second = job_info(jobs[0])[0], job_info(jobs[1])[0]
    assert second["StartTime"] >= first["EndTime"]  # ISO timestamps: iteration 2 started after 1 ended
    run_dir = tmp_path / "chain"
    marker = json.loads((run_dir / "iter_02" / "samples.done").read_text())
    assert marker["model"] == str(run_dir / "iter_01" / "model")  # generated with iteration 1's model
    assert (run_dir / "iter_02" / "eval.done").is_file()


@pytest.mark.slow
@needs_cluster
def test_a_failed_first_job_leaves_nothing_pending(tmp_path):
    config = write_config(tmp_path / "broken.json", learning_rat=1e-4)  # a typo: every stage refuses it
    proc = run(["bash", "scripts/submit.sh", f"CONFIG={config}", "RUN=broken", f"RESULTS={tmp_path}",
                "FROM=1", "TO=3"])
    assert proc.returncode == 0, proc.stderr
    jobs = [line.split()[0] for line in proc.stdout.splitlines()]
    assert len(jobs) == 3
    states = wait(jobs, timeout=120)
    assert states[jobs[0]] == "FAILED"
    assert all(states[j] == "CANCELLED" for j in jobs[1:]), states  # cancelled, not pending forever
    assert "unknown key 'learning_rat'" in (tmp_path / "broken" / "logs" / f"iter_01_{jobs[0]}.log").read_text()


@pytest.mark.slow
@needs_cluster
def test_three_shard_array_and_merge_equal_the_unsharded_run(tmp_path):
    config = write_config(tmp_path / "shards.json")
    whole = run([str(REPO / ".venv" / "bin" / "python"), "create_data.py", "--config", str(config),
                 "--run_dir", str(tmp_path / "whole"), "--iteration", "1", "--steps", "generate"])
    assert whole.returncode == 0, whole.stderr[-3000:]
    common = [f"CONFIG={config}", "N=1", "RUN=sharded", f"RESULTS={tmp_path}"]
    array = sbatch("--array=0-2", "--output", str(tmp_path / "gen-%A_%a.out"), "slurm/generate_array.sh", *common)
    merge = sbatch(f"--dependency=afterok:{array}", "--kill-on-invalid-dep=yes", "--output",
                   str(tmp_path / "merge-%j.out"), "slurm/merge_shards.sh", *common, "NUM_SHARDS=3")
    assert wait([array, merge]) == {array: "COMPLETED", merge: "COMPLETED"}
    sharded = tmp_path / "sharded"
    shard_sizes = [json.loads((sharded / "iter_01" / f"samples-shard-{i}-of-3.done").read_text())["metrics"]["prompts"]
                   for i in range(3)]
    assert shard_sizes == [2, 2, 2]  # 6 prompts in three slices
    assert stage_file(sharded, 1, "samples").read_bytes() == stage_file(tmp_path / "whole", 1, "samples").read_bytes()


@pytest.mark.slow
@needs_cluster
def test_multinode_training_wrapper_runs_accelerate_under_srun(tmp_path):
    config = write_config(tmp_path / "multi.json", lora_dropout=0.0)
    run_dir = tmp_path / "multi"
    prepared = run(["make", f"{run_dir}/iter_01/train.done", f"CONFIG={config}", "RUN=multi", f"RESULTS={tmp_path}"])
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    job = sbatch("--nodes=1", "--cpus-per-task=2", "--output", str(tmp_path / "train-%j.out"),
                 "slurm/train_multinode.sh", f"CONFIG={config}", "N=1", "RUN=multi", f"RESULTS={tmp_path}",
                 "PROCS_PER_NODE=2")
    assert wait([job]) == {job: "COMPLETED"}, (tmp_path / f"train-{job}.out").read_text()[-3000:]
    metrics = json.loads((run_dir / "iter_01" / "model.done").read_text())["metrics"]
    assert metrics["processes"] == 2 and metrics["global_batch"] == 2 * CONFIG["train_batch_size"]
    assert (run_dir / "iter_01" / "model" / "model.safetensors").is_file()
    log = (run_dir / "logs" / f"train_multinode_01_{job}.log").read_text()
    assert "nodes 1 x 2 processes, main localhost:" in log


def recording_sbatch(tmp_path: Path) -> tuple[dict, Path]:
    """An environment whose first sbatch on PATH submits nothing: it appends its arguments to the returned
    file and fails."""
    calls = tmp_path / "sbatch_calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\necho "recording sbatch: no cluster" >&2\nexit 1\n')
    (bin_dir / "sbatch").chmod(0o755)
    return {**clean_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, calls


def test_submit_refuses_shards_for_method_distill_before_submitting_or_writing(tmp_path):
    env, calls = recording_sbatch(tmp_path)
    results = tmp_path / "results"

    def submit(config: str, shards: int) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "scripts/submit.sh", f"CONFIG={config}", f"RESULTS={results}", f"SHARDS={shards}"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

    refused = submit("configs/distill_tiny.yaml", 2)
    assert refused.returncode == 2
    assert refused.stderr == ("submit.sh: SHARDS=2: CONFIG=configs/distill_tiny.yaml has method distill, whose rounds "
                              "sample Track B's prompt with distill_samples.py, which is not sharded; use SHARDS=1\n")
    assert refused.stdout == "" and not calls.exists() and not results.exists()  # nothing submitted or written
    for config, shards in (("configs/distill_tiny.yaml", 1), ("configs/tiny.yaml", 2)):  # the guard is this case only
        passed = submit(config, shards)
        assert passed.returncode == 1 and passed.stderr.endswith("recording sbatch: no cluster\n"), passed.stderr
    assert len(calls.read_text().splitlines()) == 2  # each reached its first sbatch call
