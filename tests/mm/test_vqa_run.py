"""vqa_voc end to end on a tiny VOC folder: configs/mm/bccd-vqa.yaml trained 5 steps, `r1 eval`,
r1.load(run).predict and the server answer the same; an mm_jsonl run trains and evaluates."""
from __future__ import annotations

import json

import httpx
import pytest
import yaml

import r1
from r1.bench.load import wait_ready
from r1.config import load_config
from r1.serve import ServeConfig, create_app
from tests.conftest import ROOT, run_r1
from tests.mm.vqa_folders import write_voc
from tests.serve.helpers import running_server

TEMPLATE_KEYS = [f"test/accuracy_{t}" for t in ("count", "exists", "largest", "smallest", "most", "compare")]


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
    from r1.train import fit

    base = tmp_path_factory.mktemp("vqa")
    root = write_voc(base / "voc")
    run = base / "run"
    fit(load_config(ROOT / "configs/mm/bccd-vqa.yaml", [
        f"run.dir={run}", f"data.root={root}", "data.img_size=64", "data.batch_size=8", "train.max_steps=5",
        "train.eval_every=0", "train.log_every=5", "sched.warmup_steps=1"]))
    return run, root


def test_training_writes_per_template_metrics(voc_run):
    run, _ = voc_run
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ["test/accuracy", "test/majority_accuracy", "test/count_mae", "test/count_mse"] + TEMPLATE_KEYS:
        assert key in metrics, key
    assert metrics["train/steps"] == 5 and metrics["data/train_questions"] > 0
    assert "test/accuracy_relational" not in metrics
    info = json.loads((run / "model.json").read_text())
    assert info["meta"]["dataset"] == "vqa_voc" and info["model"]["name"] == "r1_mm"


def test_r1_eval_reproduces_the_test_metrics(voc_run):
    run, _ = voc_run
    out = run_r1("eval", str(run), "--split", "test")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout[out.stdout.index("{"):])
    saved = json.loads((run / "metrics.json").read_text())
    assert got["test/accuracy"] == pytest.approx(saved["test/accuracy"], abs=1e-6)
    assert got["test/count_mae"] == pytest.approx(saved["test/count_mae"], abs=1e-5)


def test_predict_and_serve_answer_alike(voc_run):
    run, root = voc_run
    image = root / "JPEGImages" / "a.jpg"
    p = r1.load(run)
    local = p.predict([(str(image), "How many cat are there?")], top_k=3)[0]
    assert local["answer"] in p.meta["answers"] and len(local["top_k"]) == 3
    cfg = ServeConfig(model=str(run), max_batch=4, max_text_chars=200, warmup_runs=1)
    with running_server(create_app(cfg)) as (url, _):
        wait_ready(url, timeout=90)
        r = httpx.post(url + "/v1/predict", files={"file": ("a.jpg", image.read_bytes(), "image/jpeg")},
                       data={"text": "How many cat are there?", "top_k": "3"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["answer"] == local["answer"]
    assert r.json()["result"]["probability"] == pytest.approx(local["probability"], abs=1e-4)


def test_jsonl_run_trains_and_evaluates(tmp_path):
    from PIL import Image

    from r1.train import fit

    (tmp_path / "imgs").mkdir()
    rows = []
    for k, colour in enumerate(["red", "green", "blue", "red", "green", "blue"]):
        Image.new("RGB", (48, 40), colour).save(tmp_path / "imgs" / f"{k}.png")
        rows.append({"image": f"imgs/{k}.png", "text": "what colour is the picture?", "answer": colour})
    for split in ("train", "val"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"run": {"dir": str(tmp_path / "run"), "threads": 1},
           "model": {"name": "mm_cnn_mlp", "flavor": "tiny"},
           "data": {"name": "mm_jsonl", "train": str(tmp_path / "train.jsonl"), "val": str(tmp_path / "val.jsonl"),
                    "test": str(tmp_path / "val.jsonl"), "img_size": 32, "batch_size": 4},
           "train": {"max_steps": 3, "eval_every": 0}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    fit(load_config(tmp_path / "cfg.yaml", []))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["test/accuracy"] <= 1.0 and metrics["data/skipped_images"] == 0
    out = r1.load(tmp_path / "run").predict([(str(tmp_path / "imgs/0.png"), "what colour is the picture?")])
    assert out[0]["answer"] in ("red", "green", "blue")
