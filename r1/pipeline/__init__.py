"""`r1 pipeline RECIPE.yaml`: run stages in order, each reading an earlier stage's output.

A finished stage leaves `<dir>/<stage>/stage.json` with a fingerprint of what it computed from
(r1.pipeline.fingerprint): a re-run skips it while that is unchanged, and re-runs it (and, through
their inputs, the stages after it) when it changed, saying why. A stage that re-runs first moves its
old directory to `<dir>/<stage>.old` (replacing an older one): the previous result stays at hand for
a comparison or after a mistaken override, and nothing stale (checkpoints/last.pt) can make the
trainer resume from it. A failing stage stops the pipeline with its name in the error; an interrupted
stage continues where it stopped when its settings are unchanged. The last bench stage writes
report.md/json + plots.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from r1.errors import R1Error
from r1.outputs import output_folder
from r1.pipeline.fingerprint import fingerprint, output_hash, stage_record, why_changed
from r1.pipeline.recipe import BenchStage, Recipe, load_recipe
from r1.pipeline.report import build_report
from r1.pipeline.stages import RUNNERS
from r1.train.logs import detach_run_logging, format_duration

log = logging.getLogger("r1.pipeline")

MARKER, PENDING = "stage.json", "stage.pending.json"


class StageFailed(R1Error):
    def __init__(self, stage, err: Exception):
        super().__init__(f"pipeline stopped at stage {stage.name!r} ({stage.kind}): {err}")
        self.exit_code = getattr(err, "exit_code", 1)


class _Clock:
    """Elapsed time of the pipeline and an ETA from per-kind history: a train stage is estimated by the
    mean of the train stages timed so far (in this run, or recorded by a stage skipped as unchanged),
    an export, quantize, prune or bench stage by those of its own kind; a kind with no timed stage yet
    is "unknown" rather than guessed from another kind (a train stage's minutes say nothing of an
    export's seconds)."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.times: dict[str, list[float]] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def add(self, kind: str, seconds: float) -> None:
        self.times.setdefault(kind, []).append(seconds)

    def eta(self, kinds: list[str]) -> tuple[float, list[str]]:
        """(seconds for the stages of these kinds whose kind was timed, the kinds never timed, in order).
        Stages that turn out unchanged take no time, so the seconds are an upper estimate."""
        known = sum(sum(self.times[k]) / len(self.times[k]) for k in kinds if k in self.times)
        return known, list(dict.fromkeys(k for k in kinds if k not in self.times))

    def eta_text(self, kinds: list[str]) -> str:
        seconds, unknown = self.eta(kinds)
        if not unknown:
            return f"ETA {format_duration(seconds)}"
        if len(unknown) == len(set(kinds)):
            return f"ETA unknown (no {', '.join(unknown)} stage timed yet)"
        return f"ETA {format_duration(seconds)} + unknown ({', '.join(unknown)}: no stage of that kind timed yet)"

    def banner(self, i: int, stages: list, state: str) -> str:
        stage = stages[i - 1]
        return (f"stage {i}/{len(stages)} {stage.name} ({stage.kind}): {state} | elapsed "
                f"{format_duration(self.elapsed())}, {self.eta_text([s.kind for s in stages[i - 1:]])}")


def _read(path: Path, warn: bool = True) -> dict | None:
    """A stage's JSON record; None when absent, or (with a warning) when damaged, e.g. truncated by a
    crash while it was written: the stage then counts as not finished and runs again."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        data, why = None, f"unreadable ({err})"
    else:
        why = "not a stage record"
    if isinstance(data, dict) and (path.name == PENDING or "output" in data):
        return data
    if warn:
        log.warning("%s: %s; the stage is taken as not finished", path, why)
    return None


def _set_aside(out_dir: Path) -> Path:
    old = out_dir.with_name(out_dir.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    out_dir.rename(old)
    return old


def _finished(out_dir: Path, stage, fp: str, record: dict) -> dict | None:
    """The stage's stage.json when it finished with this fingerprint, else None."""
    done = _read(out_dir / MARKER)
    if done and done.get("fingerprint") is None:  # finished by an r1 that recorded no fingerprint
        log.warning("stage %s: finished before fingerprints were recorded; taken as done with the current "
                    "settings (delete %s to re-run it)", stage.name, out_dir)
        done.update(fingerprint=fp, record=record, output_hash=output_hash(done["output"]))
        (out_dir / MARKER).write_text(json.dumps(done, indent=2))
    return done if done and done["fingerprint"] == fp else None


def _clear_stale(out_dir: Path, stage, fp: str, record: dict) -> None:
    """Set aside a finished run with other settings, or an interrupted one with other settings; an
    interrupted run with these settings stays and continues (its checkpoints/last.pt)."""
    done, pending = _read(out_dir / MARKER, warn=False), _read(out_dir / PENDING)
    if done or (out_dir.exists() and (pending or {}).get("fingerprint") != fp):
        reason = why_changed((done or pending or {}).get("record"), record)
        old = _set_aside(out_dir)
        log.info("stage %s: %s, re-running (the %s run moved to %s)", stage.name, reason,
                 "finished" if done else "unfinished", old)
    elif out_dir.exists():
        log.info("stage %s: continuing the interrupted run in %s", stage.name, out_dir)


def _run_stage(recipe: Recipe, stage, outputs: dict[str, str], out_dir: Path) -> str:
    try:
        if isinstance(stage, BenchStage):
            build_report(stage, outputs, out_dir)
            for name in ("report.md", "report.json"):
                (recipe.dir / name).write_text((out_dir / name).read_text())
            return str(out_dir)
        return RUNNERS[stage.kind](recipe, stage, outputs, out_dir)
    except R1Error as err:
        raise StageFailed(stage, err) from err
    except Exception as err:  # a bug in a stage: still name the stage, keep the traceback in the log
        log.exception("stage %s failed", stage.name)
        raise StageFailed(stage, err) from err
    finally:
        detach_run_logging()  # the next stage's lines stay out of this stage's log.txt


def run_pipeline(recipe: Recipe | str | Path, overrides: list[str] | None = None) -> dict[str, str]:
    """Run (or continue) a recipe; returns stage name -> output path."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    output_folder(recipe.dir, "pipeline.dir", "pipeline")  # the output-folder rules (r1/outputs.py)
    outputs: dict[str, str] = {}
    hashes: dict[str, str] = {}  # stage -> hash of its output: the inputs of later stages' fingerprints
    clock, stages, ran = _Clock(), recipe.stages, 0
    for i, stage in enumerate(stages, 1):
        out_dir = recipe.dir / stage.name
        try:
            record = stage_record(recipe, stage, outputs, hashes)
        except R1Error as err:
            raise StageFailed(stage, err) from err
        fp = fingerprint(record)
        done = _finished(out_dir, stage, fp, record)
        if done:
            outputs[stage.name], hashes[stage.name] = done["output"], done["output_hash"]
            if done.get("seconds"):  # how long it took when it ran: history for the kind's estimate
                clock.add(stage.kind, float(done["seconds"]))
            log.info(clock.banner(i, stages, "unchanged, skipped"))
            continue
        _clear_stale(out_dir, stage, fp, record)
        log.info(clock.banner(i, stages, "running"))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / PENDING).write_text(json.dumps({"fingerprint": fp, "record": record}, indent=2))
        t0 = time.perf_counter()
        output = _run_stage(recipe, stage, outputs, out_dir)
        seconds = time.perf_counter() - t0
        clock.add(stage.kind, seconds)
        outputs[stage.name], hashes[stage.name] = output, output_hash(output)
        (out_dir / MARKER).write_text(json.dumps({"output": output, "seconds": round(seconds, 1), "fingerprint": fp,
                                                  "output_hash": hashes[stage.name], "record": record}, indent=2))
        (out_dir / PENDING).unlink()
        log.info("stage %d/%d %s: done in %s -> %s", i, len(stages), stage.name, format_duration(seconds), output)
        ran += 1
    log.info("pipeline %s: %d stage(s) run, %d unchanged, in %s", recipe.name, ran, len(stages) - ran,
             format_duration(clock.elapsed()))
    return outputs
