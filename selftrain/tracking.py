"""Experiment trackers (config `report_to`): the SFT and DPO trainings, and each iteration's round metrics
at step = iteration, so that a run's curves are in one dashboard.

transformers' integrations log the trainings (loss, learning rate, DPO rewards, every logging step); this
module names their runs and folders, and logs the figures of `make report` (report.round_scalars) when an
iteration's evaluation, its last stage, is written. A run `results/<run>/` keeps the trackers' local
files in `results/<run>/tracker/`:

    tracker/iter_01/            TensorBoard: iteration 1's training (iter_03-phase2/: a later DPO phase,
                                whose steps restart)
    tracker/rounds/             TensorBoard: the round metrics, one point per iteration
    tracker/wandb/, *_rounds.id Weights & Biases' files (WANDB_DIR); the ids of the wandb and MLflow rounds runs

`tensorboard --logdir results/<run>/tracker` shows them together. Elsewhere the run's name (its folder's)
holds them together: the wandb group (project `selftrain`), the MLflow experiment, the trackio project,
unless the environment already sets WANDB_RUN_GROUP, WANDB_PROJECT, WANDB_DIR or MLFLOW_EXPERIMENT_NAME;
the trainings are `<run>-iter_01`, ..., the round metrics `<run>-rounds`. A checkpoint outside a run's
layout (train.py --output_dir X by hand) reports as `X.name` of the run X's parent folder.

Tested offline: TensorBoard (the event files read back). The wandb, MLflow and trackio calls follow
their public APIs (wandb.init with id and resume, run.log with step; mlflow.start_run, log_metrics with
step; trackio.init, log with step) and are untested here: none of those packages is installed.
"""
from __future__ import annotations

import importlib.util
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from selftrain.config import Config
from selftrain.errors import InputError
from selftrain.logging import log

# the package each tracker of config.TRACKERS needs, and how to install it
PACKAGES = {"tensorboard": ("tensorboard", "pip install tensorboard (make setup-test installs it)"),
            "wandb": ("wandb", "pip install wandb"), "mlflow": ("mlflow", "pip install mlflow"),
            "trackio": ("trackio", "pip install trackio")}
ROUNDS = "rounds"  # the tracker run of the round metrics: tracker/rounds/, <run>-rounds


def enabled(config: Config) -> list[str]:
    """The trackers `report_to` names ([] for none)."""
    return [t for t in config.report_to if t != "none"]


def check_available(config: Config, where: str = "config") -> None:
    """Refuse, before any work, a tracker the installed transformers has no integration for, or whose
    package is not installed (nothing would be logged, and it would say so only when training starts)."""
    trackers = enabled(config)
    if not trackers:
        return
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    for name in trackers:
        if name not in INTEGRATION_TO_CALLBACK:
            raise InputError(f"{where}: report_to: {name!r}: the installed transformers has no such integration "
                             f"(it has {', '.join(INTEGRATION_TO_CALLBACK)})")
        package, install = PACKAGES[name]
        if importlib.util.find_spec(package) is None:
            raise InputError(f"{where}: report_to: {name} needs the {package!r} package, which is not installed: "
                             f"{install}")


@dataclass(frozen=True)
class Destination:
    """A run's trackers: the folder of their local files, and the run's name."""

    run_dir: Path

    @property
    def directory(self) -> Path:
        return self.run_dir / "tracker"

    @property
    def run(self) -> str:
        return self.run_dir.resolve().name


def training_destination(output_dir) -> tuple[Destination, str]:
    """Where the training of the checkpoint `output_dir` reports, and its name: `iter_NN` of the run
    for `<run>/iter_NN/model` (runs.model_dir), else `X.name` of the run X.parent."""
    output_dir = Path(output_dir)
    if output_dir.name == "model" and re.fullmatch(r"iter_\d{2,}", output_dir.parent.name):
        return Destination(output_dir.parent.parent), output_dir.parent.name
    return Destination(output_dir.parent), output_dir.name


def _environment(destination: Destination, trackers: list[str]) -> None:
    """What the integrations read from the environment (transformers takes no argument for it), where the
    user has not set it: wandb's folder, project and group, MLflow's experiment."""
    destination.directory.mkdir(parents=True, exist_ok=True)
    if "wandb" in trackers:
        os.environ.setdefault("WANDB_DIR", str(destination.directory))
        os.environ.setdefault("WANDB_PROJECT", "selftrain")
        os.environ.setdefault("WANDB_RUN_GROUP", destination.run)
    if "mlflow" in trackers:
        os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", destination.run)


def trainer_settings(config: Config, output_dir, phase: int = 1) -> dict:
    """TrainingArguments' report_to, run_name and project (trackio's) for the training of the checkpoint
    `output_dir` (phase > 1: a later DPO phase, a new trainer whose steps restart, so a run of its own),
    and its TensorBoard folder (TENSORBOARD_LOGGING_DIR, which TensorBoardCallback reads when the trainer
    is built: by default it would write inside the trainer's output folder, which the save deletes)."""
    trackers = enabled(config)
    if not trackers:
        return {"report_to": "none"}
    destination, name = training_destination(output_dir)
    name += f"-phase{phase}" if phase > 1 else ""
    _environment(destination, trackers)
    if "tensorboard" in trackers:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(destination.directory / name)
    return {"report_to": trackers, "run_name": f"{destination.run}-{name}", "project": destination.run}


def metric_name(key: str) -> str:
    """A figure's name as every tracker takes it (MLflow allows letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^\w\-./ ]", "_", key)


def log_round(config: Config, run_dir, iteration: int, scalars: dict[str, float]) -> None:
    """Log one iteration's round metrics to every tracker of `report_to`, at step = iteration."""
    trackers = enabled(config)
    if not trackers or not scalars:
        return
    destination = Destination(Path(run_dir))
    _environment(destination, trackers)
    figures = {metric_name(key): float(value) for key, value in scalars.items()}
    for tracker in trackers:
        ROUND_WRITERS[tracker](destination, iteration, figures)
    log(f"iteration {iteration}: {len(figures)} round metrics to {', '.join(trackers)} ({destination.directory})")


def _tensorboard(destination: Destination, step: int, figures: dict[str, float]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(destination.directory / ROUNDS))
    try:
        for key, value in figures.items():
            writer.add_scalar(key, value, step)
    finally:
        writer.close()


def _saved_id(destination: Destination, tracker: str) -> Path:
    return destination.directory / f"{tracker}_{ROUNDS}.id"


def _wandb(destination: Destination, step: int, figures: dict[str, float]) -> None:
    import wandb

    saved = _saved_id(destination, "wandb")
    if not saved.is_file():  # one wandb run for all iterations, resumed by its id
        saved.write_text(secrets.token_hex(4) + "\n")
    # project, group and folder: the environment (_environment), as the trainings'
    run = wandb.init(id=saved.read_text().strip(), name=f"{destination.run}-{ROUNDS}", resume="allow")
    try:
        run.log(figures, step=step)
    finally:
        run.finish()


def _mlflow(destination: Destination, step: int, figures: dict[str, float]) -> None:
    import mlflow

    mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
    saved = _saved_id(destination, "mlflow")
    run_id = saved.read_text().strip() if saved.is_file() else None
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else f"{destination.run}-{ROUNDS}") as run:
        saved.write_text(run.info.run_id + "\n")
        mlflow.log_metrics(figures, step=step)


def _trackio(destination: Destination, step: int, figures: dict[str, float]) -> None:
    import trackio

    trackio.init(project=destination.run, name=f"{destination.run}-{ROUNDS}", resume="allow")
    trackio.log(figures, step=step)
    trackio.finish()


ROUND_WRITERS = {"tensorboard": _tensorboard, "wandb": _wandb, "mlflow": _mlflow, "trackio": _trackio}
