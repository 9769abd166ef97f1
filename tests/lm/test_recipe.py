"""The embedded three-stage recipe end to end, on a few steps (about a minute: `-m slow`)."""
import json

import pytest

from r1.pipeline import load_recipe, run_pipeline
from tests.conftest import ROOT


@pytest.mark.slow
def test_embedded_recipe_chains_three_stages_with_ewc(tmp_path):
    plan = load_recipe(ROOT / "recipes/lm-embedded.yaml", ["run.threads=1", "train.max_steps=2", "train.eval_every=2",
                                                            "train.ewc_samples=4", "data.eval_batch_size=256"])
    plan.dir = tmp_path / "lm"
    run_pipeline(plan)
    pre, dom, ins = (json.loads((plan.dir / stage / "metrics.json").read_text())
                     for stage in ("pretrain", "domain", "instruct"))
    assert (plan.dir / "pretrain" / "ewc.safetensors").is_file() and (plan.dir / "domain" / "ewc.safetensors").is_file()
    assert dom["test/tokens"] == ins["test/tokens"] == pre["val/tokens"]  # stage 1's validation split
    history = (plan.dir / "instruct" / "history.jsonl").read_text()
    assert '"train/ewc"' in history and "val/rougeL" in ins
    report = json.loads((plan.dir / "report.json").read_text())
    assert [r["name"] for r in report["rows"]] == ["pretrain", "domain", "instruct"]
    assert report["rows"][1]["metric"] == pytest.approx(dom["test/loss"], abs=1e-4)
