"""The mm family end to end: a tiny fit on Sort-of-CLEVR, its metrics, r1.load(run).predict on an
(image, question) pair; the evaluator on known answers; the spec's hooks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import r1
from r1.config import load_config
from r1.errors import ConfigError, DataError
from r1.family import FamilySpec, get_family
from tests.conftest import ROOT

KEYS = ("accuracy", "accuracy_relational", "accuracy_nonrelational", "majority_accuracy", "count_mae")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from r1.train import fit

    run = tmp_path_factory.mktemp("mm") / "run"
    cfg = load_config(ROOT / "configs/mm/sortofclevr.yaml", [
        f"run.dir={run}", "data.train_images=60", "data.val_images=10", "data.test_images=10",
        "data.batch_size=16", "train.max_steps=4", "train.eval_every=2", "train.log_every=2", "sched.warmup_steps=1"])
    fit(cfg)
    return run


def test_fit_writes_the_vqa_metrics(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in KEYS:
        assert f"test/{key}" in metrics and np.isfinite(metrics[f"test/{key}"])
    assert metrics["train/steps"] == 4 and metrics["train/cpu_s"] > 0
    info = json.loads((trained / "model.json").read_text())
    assert info["family"] == "mm" and info["model"]["vocab_size"] == info["meta"]["vocab_size"]


def test_load_and_predict_one_pair(trained):
    from r1.models.mm.data import generate_split

    p = r1.load(trained)
    assert p.family == "mm" and p.inputs == "image+text" and p.runtime == "torch"
    image = Image.fromarray(generate_split(10, 75, 4, 0, 2)["images"][0].permute(1, 2, 0).numpy())
    out = p.predict([(image, "What is the shape of the red object?")], top_k=3)
    assert len(out) == 1 and set(out[0]) == {"answer", "probability", "top_k"}
    assert out[0]["answer"] in p.meta["answers"] and len(out[0]["top_k"]) == 3
    assert out[0]["top_k"][0]["answer"] == out[0]["answer"] and 0 < out[0]["probability"] <= 1
    # the same pair as a mapping, batched with another question: the same answer
    two = p.predict([{"image": image, "text": "what is the shape of the red object?"},
                     (np.asarray(image), "how many objects have the same shape as the blue object?")])
    assert two[0]["answer"] == out[0]["answer"] and abs(two[0]["probability"] - out[0]["probability"]) < 1e-4
    assert out[0].to_json() == dict(out[0])
    p.warmup(batch_sizes=(1, 2))


def test_predict_rejects_bad_inputs(trained):
    p = r1.load(trained)
    image = Image.new("RGB", (75, 75), "white")
    with pytest.raises(ConfigError, match="missing \\['text'\\]"):
        p.predict([{"image": image}])
    with pytest.raises(ConfigError, match="pairs"):
        p.predict([image])
    with pytest.raises(ConfigError, match="text must be a string"):
        p.predict([(image, 3)])
    with pytest.raises(DataError, match="empty question"):
        p.predict([(image, "  ")])
    with pytest.raises(ConfigError, match="runs with torch, onnx, onnx-int8 only"):
        r1.load(trained, runtime="tensorrt")


def test_kd_adapter_and_example_inputs(trained):
    spec = get_family("mm")
    model = r1.load_model(trained)
    x = spec.hook("example_inputs")(model.r1_meta, 3, torch.Generator().manual_seed(0))
    assert model(x).shape == (3, 10)
    targets = {"answer": torch.tensor([0, 1, 2]), "qtype": torch.tensor([0, 3, 5])}
    model.train()
    task, s_logits, t_logits, mask = spec.hook("kd")(model, r1.load_model(trained), x, targets)
    assert "answer" in task and s_logits.shape == t_logits.shape == (3, 10) and mask is None


class FixedAnswers(torch.nn.Module):
    def __init__(self, answers):
        super().__init__()
        self.answers = answers

    def forward(self, inputs):
        return torch.nn.functional.one_hot(self.answers, 10).float()


def test_evaluator_on_known_answers():
    from r1.models.mm.data import ANSWERS, COUNT_TYPES, QUESTION_TYPES, RELATIONAL
    from r1.models.mm.metrics import evaluate_vqa

    meta = {"answers": ANSWERS, "question_types": QUESTION_TYPES, "relational_types": RELATIONAL,
            "count_types": COUNT_TYPES, "majority_answer": 0}
    idx = ANSWERS.index
    truth = torch.tensor([idx("yes"), idx("square"), idx("circle"), idx("3"), idx("5"), idx("no")])
    qtype = torch.tensor([1, 0, 3, 5, 5, 2])
    preds = torch.tensor([idx("yes"), idx("circle"), idx("circle"), idx("3"), idx("2"), idx("yes")])
    loader = [({"x": torch.zeros(6)}, {"answer": truth, "qtype": qtype})]
    out = evaluate_vqa(FixedAnswers(preds), loader, meta, "cpu")
    assert out["accuracy"] == pytest.approx(3 / 6)
    assert out["accuracy_relational"] == pytest.approx(2 / 3)   # circle ok, 3 ok, 2 vs 5 wrong
    assert out["accuracy_nonrelational"] == pytest.approx(1 / 3)
    assert out["majority_accuracy"] == pytest.approx(1 / 6)     # always "yes"
    assert out["count_mae"] == pytest.approx((0 + 3) / 2)
    assert out["accuracy_count"] == pytest.approx(0.5)


def test_spec_and_input_kind():
    spec = get_family("mm")
    assert spec.inputs == "image+text" and spec.monitor == "accuracy" and spec.mode == "max"
    with pytest.raises(ValueError, match="predictor"):
        FamilySpec(name="x", summary="", evaluate=None, monitor="accuracy", mode="max", inputs="image+text")
