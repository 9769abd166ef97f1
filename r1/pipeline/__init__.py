"""`r1 pipeline RECIPE.yaml`: run stages in order, each reading an earlier stage's output.

A finished stage leaves `<dir>/<stage>/stage.json` and is skipped on a re-run; a failing stage
stops the pipeline with its name in the error. The last bench stage writes report.md/json + plots.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from r1.errors import R1Error
from r1.pipeline.recipe import BenchStage, Recipe, load_recipe
from r1.pipeline.report import build_report
from r1.pipeline.stages import RUNNERS

log = logging.getLogger("r1.pipeline")


class StageFailed(R1Error):
    def __init__(self, stage, err: Exception):
        super().__init__(f"pipeline stopped at stage {stage.name!r} ({stage.kind}): {err}")
        self.exit_code = getattr(err, "exit_code", 1)


def run_pipeline(recipe: Recipe | str | Path, overrides: list[str] | None = None) -> dict[str, str]:
    """Run (or continue) a recipe; returns stage name -> output path."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    recipe.dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, str] = {}
    for i, stage in enumerate(recipe.stages, 1):
        out_dir = recipe.dir / stage.name
        marker = out_dir / "stage.json"
        if marker.is_file():
            outputs[stage.name] = json.loads(marker.read_text())["output"]
            log.info("[%d/%d] %s (%s): done earlier, skipped", i, len(recipe.stages), stage.name, stage.kind)
            continue
        log.info("[%d/%d] %s (%s): running", i, len(recipe.stages), stage.name, stage.kind)
        out_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            if isinstance(stage, BenchStage):
                build_report(stage, outputs, out_dir)
                for name in ("report.md", "report.json"):
                    (recipe.dir / name).write_text((out_dir / name).read_text())
                output = str(out_dir)
            else:
                output = RUNNERS[stage.kind](recipe, stage, outputs, out_dir)
        except R1Error as err:
            raise StageFailed(stage, err) from err
        except Exception as err:  # a bug in a stage: still name the stage, keep the traceback in the log
            log.exception("stage %s failed", stage.name)
            raise StageFailed(stage, err) from err
        outputs[stage.name] = output
        marker.write_text(json.dumps({"output": output, "seconds": round(time.perf_counter() - t0, 1)}))
        log.info("[%d/%d] %s: done in %.0f s -> %s", i, len(recipe.stages), stage.name,
                 time.perf_counter() - t0, output)
    return outputs
