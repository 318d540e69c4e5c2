"""Run folders, stage outputs and completion markers.

A run lives in `results/<run>/`:

    iter_00/eval_<ts>.json    eval.done          base model, the honest baseline
    iter_01/samples_<ts>.jsonl  samples.done     stage 1 generations
            judged_<ts>.jsonl   judged.done      + predicted, is_correct, reward_score
            rationales_<ts>.jsonl rationales.done  hinted attempts for unsolved prompts
            train_<ts>.jsonl    train.done       the selected training set
            model/ (merged checkpoint, adapter/ inside)  model.done
            eval_<ts>.json      eval.done

A `<stage>.done` marker is written last and names the output file plus its
metrics and resolved config; Make targets depend on markers, so a rerun redoes
only missing stages. An unfinished stage leaves its timestamped file without a
marker; the rerun picks that file up and appends to it. Which stages a run has
is the method's chain (mk/<method>.mk); this module knows none of them by name.

The stage scripts share one contract, `open_stage` / `Stage`: resolve the inputs
(the iteration's finished stages in a run, sibling files by hand), name the
output, return early when the marker exists (`done`), and `finish` with
metrics and the config. (train.py's output is a checkpoint folder and
create_data.py's hand-run files sit beside its --output, so those two build
their StageOutput themselves and use `Stage` for the rest.)
"""
from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from selftrain.errors import InputError
from selftrain.logging import log

PROCESS_START = time.time()  # stage scripts are one process per stage: wall time includes model loading


def iter_dir(run_dir: str | Path, iteration: int) -> Path:
    return Path(run_dir) / f"iter_{iteration:02d}"


def model_dir(run_dir: str | Path | None, iteration: int) -> Path:
    """Where iteration N's checkpoint lives: in a run folder, or the seed's by-hand default."""
    return iter_dir(run_dir, iteration) / "model" if run_dir else Path(f"results/model_star_iter{iteration}")


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / (1024 * 1024) if sys.platform != "darwin" else kib / 1024**3, 3)


@dataclass
class StageOutput:
    """Where a stage writes, and the marker that says it finished (None when run by hand)."""

    path: Path
    marker: Path | None

    @property
    def sidecar(self) -> Path:
        """Config + metrics file written beside a hand-run output."""
        return self.path.with_name(self.path.name.removesuffix(".jsonl").removesuffix(".json") + ".config.json")

    def is_done(self) -> bool:
        return self.marker is not None and self.marker.is_file()

    def finish(self, config, metrics: dict, extra: dict | None = None) -> None:
        data = {"output": self.path.name, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "metrics": {**metrics, "peak_rss_gib": peak_rss_gib(),
                             "wall_seconds": round(time.time() - PROCESS_START, 1)},
                **(extra or {}), "config": config.to_dict()}
        text = json.dumps(data, indent=2) + "\n"
        target = self.marker if self.marker is not None else self.sidecar
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(target)


def stage_output(stage: str, *, explicit: str | None, run_dir: str | None, iteration: int,
                 default: str, suffix: str = ".jsonl") -> StageOutput:
    """Resolve a stage's output: an explicit path, the run layout, or the by-hand default."""
    if explicit:
        return StageOutput(Path(explicit), None)
    if run_dir:
        directory = iter_dir(run_dir, iteration)  # created by the first write, not before input is checked
        marker = directory / f"{stage}.done"
        if marker.is_file():
            return StageOutput(directory / json.loads(marker.read_text())["output"], marker)
        # <stage>_<timestamp>: never another stage whose name extends this one (ift_samples_* for ift)
        unfinished = sorted(directory.glob(f"{stage}_[0-9]*{suffix}"))
        path = unfinished[-1] if unfinished else directory / f"{stage}_{timestamp()}{suffix}"
        return StageOutput(path, marker)
    return StageOutput(Path(default), None)


def finished_output(run_dir: str | Path, iteration: int, stage: str) -> Path:
    """The output of a finished stage of a run; a clear error if it has not finished."""
    marker = iter_dir(run_dir, iteration) / f"{stage}.done"
    if not marker.is_file():
        raise InputError(f"{marker}: missing: run the '{stage}' stage of iteration {iteration} first")
    return marker.parent / json.loads(marker.read_text())["output"]


def read_marker(run_dir: str | Path, iteration: int, stage: str) -> dict | None:
    marker = iter_dir(run_dir, iteration) / f"{stage}.done"
    return json.loads(marker.read_text()) if marker.is_file() else None


def generator_for(config, run_dir: str | Path | None, iteration: int) -> str:
    """The model that generates in iteration N: the base model for N <= 1, else iteration N-1's model."""
    if iteration <= 1:
        return config.base_model_path
    return str(model_dir(run_dir, iteration - 1))


@dataclass
class Stage:
    """One stage of one iteration: its inputs by stage name, its output, its marker."""

    name: str
    inputs: dict[str, Path]
    output: StageOutput

    @property
    def path(self) -> Path:
        return self.output.path

    def done(self) -> bool:
        """True (and says so) when the marker exists: the stage has nothing to do."""
        if self.output.is_done():
            log(f"{self.name}: {self.output.marker} exists; nothing to do")
            return True
        return False

    def finish(self, config, metrics: dict, extra: dict | None = None) -> None:
        # the first input is "input" (as before there was a helper), the others "input_<stage>"
        inputs = {"input" if i == 0 else f"input_{k}": str(v) for i, (k, v) in enumerate(self.inputs.items())}
        self.output.finish(config, metrics, {**inputs, **(extra or {})})


def _stem(path: Path, stage: str) -> Path:
    """data/x.judged.jsonl -> data/x (the name shared by a hand run's files)."""
    name = path.name.removesuffix(".jsonl").removesuffix(".json").removesuffix(f".{stage}")
    return path.with_name(name)


def open_stage(args, name: str, *, inputs: tuple[str, ...] = (), optional: tuple[str, ...] = (),
               hand_output: str | None = None, default: str | None = None, suffix: str = ".jsonl") -> Stage:
    """The stage contract. `args` has run_dir, iteration and, where the script has them, input and output.

    Inputs (stage names): in a run, each finished stage of this iteration (a clear error when one is
    missing; `optional` ones are left out then); by hand, the first is --input and the others its
    siblings (`<stem>.<stage>.jsonl`, used when present). Output: --output; else the run layout; else
    `default`; else beside the first input as `<stem>.<hand_output or name>.jsonl`
    (`hand_output=""`: `<stem>.jsonl`)."""
    explicit_input = getattr(args, "input", None)
    explicit_output = getattr(args, "output", None)
    found: dict[str, Path] = {}
    if args.run_dir and not explicit_input:
        for stage in inputs + optional:
            marker = iter_dir(args.run_dir, args.iteration) / f"{stage}.done"
            if stage in optional and not marker.is_file():
                continue
            found[stage] = finished_output(args.run_dir, args.iteration, stage)
    elif inputs:
        if not explicit_input:
            raise InputError(f"{name}: give --input (and --output), or --run_dir and --iteration")
        first = Path(explicit_input)
        found[inputs[0]] = first
        for stage in inputs[1:] + optional:
            sibling = Path(f"{_stem(first, inputs[0])}.{stage}.jsonl")
            if sibling.is_file():
                found[stage] = sibling
            elif stage not in optional:
                raise InputError(f"{sibling}: missing: run the '{stage}' stage first")
    if not explicit_output and not args.run_dir and default is None:
        if not inputs:
            raise InputError(f"{name}: give --output, or --run_dir and --iteration")
        stem = _stem(found[inputs[0]], inputs[0])
        label = name if hand_output is None else hand_output
        explicit_output = f"{stem}.{label}{suffix}" if label else f"{stem}{suffix}"
    output = stage_output(name, explicit=explicit_output, run_dir=args.run_dir, iteration=args.iteration,
                          default=default or "", suffix=suffix)
    for stage, path in found.items():
        if path.resolve() == output.path.resolve():
            raise InputError(f"{path}: the {name} output would overwrite this {stage} input; give --output "
                             f"(by hand, name inputs <stem>.{stage}.jsonl)")
    return Stage(name, found, output)
