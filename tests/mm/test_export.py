"""Two-input ONNX export of the mm models: parity with torch at other batch sizes and question
lengths (each registered model), evaluation through onnxruntime equal to torch's, static int8,
the onnx runtime behind r1.load / r1 eval --runtime / the server."""
from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import r1
from r1.errors import ConfigError
from r1.models.mm.export import INPUTS, example_batch
from tests.conftest import run_cli

QUESTION = "what is the shape of the red object?"


@pytest.fixture(scope="module")
def exported(trained_mm):
    """The run's cached ONNX export (what --runtime onnx uses), made once."""
    from r1.inference.runtimes import onnx_file

    return onnx_file(trained_mm)


def session_logits(path, x):
    from r1.onnx.graph import ort_session

    return ort_session(path).run(None, dict(zip(INPUTS, (a.numpy() for a in x))))[0]


def with_offsets(model):
    """Non-zero deformable offsets (they start at zero): the DeformConv sampling is really tested."""
    gen = torch.Generator().manual_seed(3)
    for m in model.modules():
        if hasattr(m, "offset_mask"):
            with torch.no_grad():
                m.offset_mask.weight.copy_(torch.randn(m.offset_mask.weight.shape, generator=gen) * 0.2)
    return model


def test_r1mm_graph_inputs_metadata_and_parity(exported, trained_mm):
    import onnx

    proto = onnx.load(str(exported))
    assert [i.name for i in proto.graph.input] == list(INPUTS) and proto.graph.output[0].name == "logits"
    assert any(n.op_type == "DeformConv" for n in proto.graph.node)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["r1.family"] == "mm" and json.loads(props["r1.mm"])["max_len"] >= 8
    model = r1.load_model(trained_mm).eval()
    T = json.loads(props["r1.mm"])["max_len"]
    for b, t in ((5, T), (2, 4)):  # the trace used batch 2 and 8 tokens
        x = example_batch(model.r1_meta, b, t, seed=b)
        with torch.no_grad():
            ref = model(dict(zip(INPUTS, x))).numpy()
        assert np.abs(session_logits(exported, x) - ref).max() <= 1e-4


@pytest.mark.parametrize("name, fields", [("r1_mm", {}), ("r1_mm", {"qk_norm": False}), ("mm_cnn_mlp", {}),
                                          ("mm_cnn_rn", {})])
def test_each_model_exports_with_parity(name, fields, trained_mm, tmp_path):
    from r1.onnx.export import export_onnx
    from r1.registry import build_model

    meta = r1.load_model(trained_mm).r1_meta
    model = with_offsets(build_model(name, flavor="tiny", num_classes=len(meta["answers"]),
                                     vocab_size=meta["vocab_size"], max_len=meta["max_len"], **fields)).eval()
    report = export_onnx(model, tmp_path / "m.onnx", meta=meta, family="mm")
    assert report["max_abs_diff"] <= 1e-4 and report["inputs"] == list(INPUTS)
    x = example_batch(meta, 4, 5, seed=7)
    with torch.no_grad():
        ref = model(dict(zip(INPUTS, x))).numpy()
    assert np.abs(session_logits(tmp_path / "m.onnx", x) - ref).max() <= 1e-4


def test_export_needs_deformconv_opset(trained_mm, tmp_path):
    from r1.onnx.export import export_onnx

    with pytest.raises(ConfigError, match="opset >= 19"):
        export_onnx(trained_mm, tmp_path / "m.onnx", opset=18)


def test_static_shapes_moe_equals_eval_forward():
    from r1.models.mm.layers import MoE, static_shapes

    moe = MoE(16, 32, experts=4, top_k=2, capacity_factor=1.0).eval()
    x = torch.randn(37, 16)
    with torch.no_grad():
        ref, _ = moe(x)
        with static_shapes():
            got, balance = moe(x)
    assert torch.allclose(ref, got, atol=1e-5) and float(balance) == 0.0
    moe.train()
    with pytest.raises(RuntimeError, match="eval forward"), static_shapes():
        moe(x)


def test_eval_through_onnx_equals_torch(trained_mm, exported):
    from r1.evaluate.artifact import evaluate_artifact

    ref = evaluate_artifact(trained_mm, "test")
    for got in (evaluate_artifact(trained_mm, "test", runtime="onnx"), evaluate_artifact(exported, "test")):
        assert got.keys() == ref.keys()
        assert all(abs(got[k] - ref[k]) < 1e-6 for k in ref)
    res = run_cli("eval", str(trained_mm), "--runtime", "onnx", "--split", "val")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["val/accuracy"] == evaluate_artifact(trained_mm, "val")["val/accuracy"]


def test_onnx_predictor_answers_like_torch(trained_mm, exported):
    from r1.models.mm.data import generate_split

    image = Image.fromarray(generate_split(4, 75, 4, 0, 2)["images"][0].permute(1, 2, 0).numpy())
    pairs = [(image, QUESTION), {"image": image, "text": "how many objects have the same shape as the blue object?"}]
    ref = r1.load(trained_mm).predict(pairs, top_k=3)
    for p in (r1.load(trained_mm, runtime="onnx"), r1.load(exported)):
        assert p.runtime == "onnx" and p.family == "mm" and p.inputs == "image+text"
        got = p.predict(pairs, top_k=3)
        for a, b in zip(ref, got):
            assert a["answer"] == b["answer"] and abs(a["probability"] - b["probability"]) < 1e-5
        p.warmup(batch_sizes=(1, 2))
    with pytest.raises(ConfigError, match="missing \\['text'\\]"):
        p.predict([{"image": image}])


def test_predict_cli_on_the_export(trained_mm, exported, tmp_path):
    from r1.models.mm.data import generate_split

    image = tmp_path / "scene.png"
    Image.fromarray(generate_split(2, 75, 4, 0, 2)["images"][0].permute(1, 2, 0).numpy()).save(image)
    ref = r1.load(trained_mm).predict([(Image.open(image), QUESTION)])[0]
    res = run_cli("predict", str(exported), str(image), "--question", QUESTION)
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    assert rec["file"] == str(image) and rec["question"] == QUESTION and rec["answer"] == ref["answer"]
    assert abs(rec["probability"] - ref["probability"]) < 1e-5
    missing = run_cli("predict", str(exported), str(image))
    assert missing.returncode != 0 and "--question" in missing.stderr


def test_static_int8_runs_close_to_fp32(trained_mm, exported, tmp_path):
    import onnx

    from r1.compress.quantize import quantize_onnx
    from r1.evaluate.artifact import evaluate_artifact

    data = json.loads((trained_mm / "model.json").read_text())["data"]
    q = quantize_onnx(exported, tmp_path / "int8.onnx", "static", data, calib_batches=2)
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert "QuantizeLinear" in ops and "DeformConv" in ops
    meta = r1.load_model(trained_mm).r1_meta
    x = example_batch(meta, 6, 10, seed=11)
    fp, i8 = session_logits(exported, x), session_logits(q, x)
    assert np.isfinite(i8).all() and np.abs(fp - i8).max() <= 0.1 * np.abs(fp).max() + 0.05
    assert (fp.argmax(1) == i8.argmax(1)).mean() >= 0.8
    ref, got = evaluate_artifact(exported, "test"), evaluate_artifact(q, "test")
    assert abs(ref["test/accuracy"] - got["test/accuracy"]) <= 0.05


def test_quantize_artifact_of_an_export(exported, tmp_path):
    from r1.compress.quantize import quantize_artifact

    with pytest.raises(ConfigError, match="one image input"):
        quantize_artifact(exported, tmp_path / "auto", ops="auto")
    q = quantize_artifact(exported, tmp_path / "w", calib_batches=1)  # calibrated on the data the graph names
    assert json.loads(r1.load(q).props["r1.quantized"])["method"] == "static"


def test_serve_onnx_runtime(exported, trained_mm):
    from r1.bench.load import wait_ready
    from r1.models.mm.data import generate_split
    from r1.serve import ServeConfig, create_app
    from tests.serve.helpers import running_server

    buf = io.BytesIO()
    Image.fromarray(generate_split(2, 75, 4, 0, 2)["images"][0].permute(1, 2, 0).numpy()).save(buf, "PNG")
    local = r1.load(trained_mm).predict([(Image.open(io.BytesIO(buf.getvalue())), QUESTION)])[0]
    cfg = ServeConfig(model=str(trained_mm), runtime="onnx", max_batch=4, warmup_runs=1)
    with running_server(create_app(cfg)) as (base, _):
        wait_ready(base, timeout=90)
        r = httpx.post(base + "/v1/predict", files={"file": ("s.png", buf.getvalue(), "image/png")},
                       data={"text": QUESTION}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["answer"] == local["answer"]
        assert abs(r.json()["result"]["probability"] - local["probability"]) < 1e-5
        bad = httpx.post(base + "/v1/predict", json={"text": QUESTION}, timeout=60)  # no image
        assert 400 <= bad.status_code < 500
