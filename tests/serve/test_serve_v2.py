"""The Open Inference Protocol (v2) on `r1 serve`, driven by Triton's own client (`tritonclient.http`),
binary tensor data on and off: every family answers what `r1.load(run).predict` answers; v2 requests
share the dynamic batcher; canary variants are versions; Triton's config route is what
`r1 export --format triton` writes; every bad request is a 4xx with the protocol's `{"error": ...}`."""
from __future__ import annotations

import base64
import gzip
import io
import json
import logging
import struct
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from PIL import Image

import r1
from r1.bench.load import wait_ready
from r1.serve import ServeConfig, create_app
from tests.conftest import run_cli
from tests.serve.helpers import VariantLoader, running_server

th = pytest.importorskip("tritonclient.http", reason="tritonclient's HTTP client (make install) is not installed")
from tritonclient.utils import np_to_triton_dtype  # noqa: E402

CLIENT = httpx.Client(timeout=60.0)
QUESTION = "what is the shape of the red object?"


@contextmanager
def serving(cfg: ServeConfig, loader=None):
    with running_server(create_app(cfg, loader)) as (base, _):
        wait_ready(base, timeout=90)
        yield base, th.InferenceServerClient(base.removeprefix("http://"), network_timeout=60.0)


def _infer(client, model, inputs: dict, binary: bool, outputs=None, **kw):
    tensors = []
    for name, arr in inputs.items():
        t = th.InferInput(name, list(arr.shape), "BYTES" if arr.dtype == object else np_to_triton_dtype(arr.dtype))
        t.set_data_from_numpy(arr, binary_data=binary)
        tensors.append(t)
    requested = [th.InferRequestedOutput(n, binary_data=binary) for n in outputs] if outputs else None
    return client.infer(model, tensors, outputs=requested, **kw)


def _text(arr) -> list:
    return [x.decode() if isinstance(x, bytes) else x for x in np.asarray(arr).ravel()]


def _pixels(n: int, h: int = 20, w: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def cls_server(trained_digits):
    with serving(ServeConfig(model=str(trained_digits), max_batch=8, warmup_runs=1, inference="thread")) as s:
        yield s


# ------------------------------------------------------------------------------------------- every family
@pytest.mark.parametrize("binary", [True, False])
def test_classifier_answers_like_local_predict_and_shares_the_batcher(cls_server, trained_digits, binary):
    base, client = cls_server
    name = trained_digits.name
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
    meta = client.get_model_metadata(name)
    assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {
        "label": "BYTES", "class_id": "INT64", "score": "FP32", "top_label": "BYTES", "top_class_id": "INT64",
        "top_score": "FP32", "count": "INT32"}
    pixels = _pixels(4)
    before = _batches(base)
    res = _infer(client, name, {"image": pixels}, binary,
                 outputs=["label", "class_id", "score", "top_label", "top_score", "count"], parameters={"top_k": 2})
    runs, rows = (a - b for a, b in zip(_batches(base), before))
    assert rows == 4 and runs < 4  # the request's 4 rows ran in shared batches
    local = r1.load(trained_digits).predict([Image.fromarray(p) for p in pixels], top_k=2)
    assert _text(res.as_numpy("label")) == [r["label"] for r in local]
    assert res.as_numpy("class_id").tolist() == [r["class_id"] for r in local]
    np.testing.assert_allclose(res.as_numpy("score"), [r["score"] for r in local], rtol=1e-5)
    assert res.as_numpy("top_score").shape == (4, 2) and res.as_numpy("count").tolist() == [2] * 4
    assert [_text(row) for row in res.as_numpy("top_label")] == [[t["label"] for t in r["top"]] for r in local]
    assert res.get_response()["model_name"] == name and res.get_response()["model_version"] == name
    zipped = _infer(client, name, {"image": pixels[:1]}, binary, outputs=["label"], request_compression_algorithm="gzip")
    assert _text(zipped.as_numpy("label")) == [local[0]["label"]]


def _batches(base: str) -> tuple[float, float]:
    text = CLIENT.get(base + "/metrics").text
    val = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("r1_batch_size_")}
    return val["r1_batch_size_count"], val["r1_batch_size_sum"]


@pytest.mark.parametrize("binary", [True, False])
def test_detector_answers_like_local_predict(det_run, binary):
    with serving(ServeConfig(model=str(det_run), max_batch=4, warmup_runs=1, inference="thread")) as (_, client):
        pixels = _pixels(2, 48, 40, seed=1)
        res = _infer(client, "det", {"image": pixels}, binary)  # no outputs named: all, binary by default
        local = r1.load(det_run).predict([Image.fromarray(p) for p in pixels])
        counts = res.as_numpy("count").tolist()
        assert counts == [len(r["boxes"]) for r in local] and max(counts) > 0
        boxes, labels = res.as_numpy("boxes"), res.as_numpy("labels")
        assert boxes.shape == (2, max(counts), 4)
        for i, r in enumerate(local):
            np.testing.assert_allclose(boxes[i, :counts[i]], r["boxes"], rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(res.as_numpy("scores")[i, :counts[i]], r["scores"], rtol=1e-5)
            assert _text(labels[i, :counts[i]]) == r["labels"] and set(_text(labels[i, counts[i]:])) <= {""}


@pytest.fixture(scope="module")
def scene_png():
    from r1.models.mm.data import generate_split

    buf = io.BytesIO()
    Image.fromarray(generate_split(2, 75, 4, 0, 2)["images"][0].permute(1, 2, 0).numpy()).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("binary", [True, False])
def test_image_question_model_answers_like_local_predict(trained_mm, scene_png, binary):
    with serving(ServeConfig(model=str(trained_mm), max_batch=4, warmup_runs=1, inference="thread")) as (_, client):
        questions = [QUESTION, "how many objects have the same shape as the blue object?"]
        image = scene_png if binary else base64.b64encode(scene_png)  # JSON holds text: base64
        res = _infer(client, "mm", {"image": np.array([image] * 2, dtype=object),
                                    "question": np.array([q.encode() for q in questions], dtype=object)},
                     binary, outputs=["answer", "probability", "top_k_answer"], parameters={"top_k": 3})
        local = r1.load(trained_mm).predict([(Image.open(io.BytesIO(scene_png)), q) for q in questions], top_k=3)
        assert _text(res.as_numpy("answer")) == [r["answer"] for r in local]
        np.testing.assert_allclose(res.as_numpy("probability"), [r["probability"] for r in local], rtol=1e-4)
        assert [_text(row) for row in res.as_numpy("top_k_answer")] == [[t["answer"] for t in r["top_k"]]
                                                                        for r in local]


@pytest.fixture(scope="module")
def lm_server(lm_run):
    with serving(ServeConfig(model=str(lm_run), max_batch=4, max_new_tokens=40, warmup_runs=1,
                             inference="thread")) as s:
        yield s


@pytest.mark.parametrize("binary", [True, False])
def test_language_model_infer_and_generate_match_local_generation(lm_server, lm_run, binary):
    base, client = lm_server
    prompts = ["to be or not", "the quick"]
    local = [r["text"] for r in r1.load(lm_run).predict(prompts, max_new_tokens=10, temperature=0.0)]
    res = _infer(client, "lm", {"text_input": np.array([p.encode() for p in prompts], dtype=object)}, binary,
                 outputs=["text_output", "generated_tokens", "finish_reason"],
                 parameters={"max_tokens": 10, "temperature": 0.0})
    assert _text(res.as_numpy("text_output")) == local
    assert res.as_numpy("generated_tokens").tolist() == [10, 10]
    # Triton's generate extension: JSON fields in and out, and streamed as server-sent events
    body = {"text_input": prompts[0], "parameters": {"max_tokens": 10, "temperature": 0}}
    gen = CLIENT.post(base + "/v2/models/lm/generate", json=body)
    assert gen.status_code == 200 and gen.headers["x-r1-variant"] == "lm", gen.text
    assert gen.json()["text_output"] == local[0] and gen.json()["generated_tokens"] == 10
    events = [json.loads(line[6:]) for line in CLIENT.post(base + "/v2/models/lm/generate_stream", json=body)
              .text.splitlines() if line.startswith("data: ")]
    assert len(events) > 2 and "".join(e["text_output"] for e in events) == local[0]
    assert events[-1]["finish_reason"] == "length" and events[-1]["model_version"] == "lm"
    stop = local[0][3:5]
    cut = CLIENT.post(base + "/v2/models/lm/generate", json={**body, "parameters": {**body["parameters"],
                                                                                      "stop": [stop]}}).json()
    assert cut["text_output"] == local[0][:local[0].index(stop)] and cut["finish_reason"] == "stop"


# ------------------------------------------------------------------------------------------- variants
def test_canary_versions_pin_and_routed_failures_retry_on_stable(tmp_path):
    cfg = ServeConfig(variants={"stable": str(tmp_path / "digits"), "canary": str(tmp_path / "flaky")},
                      traffic={"stable": 0, "canary": 100}, warmup_runs=0, inference="thread")
    with serving(cfg, VariantLoader()) as (base, client):
        assert client.get_model_metadata("digits")["versions"] == ["stable", "canary"]
        ok = _infer(client, "digits", {"image": _pixels(1, 8, 8)}, True, model_version="canary")
        assert ok.get_response()["model_version"] == "canary"
        # a routed request hits the canary, whose model fails on 7-pixel-wide images: answered by stable
        routed = CLIENT.post(base + "/v2/models/digits/infer", json={"inputs": [
            {"name": "image", "datatype": "UINT8", "shape": [1, 2, 7, 3], "data": [0] * 42}]})
        assert routed.status_code == 200 and routed.headers["x-r1-variant"] == "stable"
        assert routed.json()["model_version"] == "stable"
        pinned = CLIENT.post(base + "/v2/models/digits/versions/canary/infer", json={"inputs": [
            {"name": "image", "datatype": "UINT8", "shape": [1, 2, 7, 3], "data": [0] * 42}]})
        assert pinned.status_code == 500 and pinned.headers["x-r1-variant"] == "canary" and "error" in pinned.json()
        with pytest.raises(th.InferenceServerException, match="no version"):
            client.get_model_metadata("digits", model_version="v9")


# ------------------------------------------------------------------------------------------- config
def test_config_route_is_what_r1_export_writes(mlp_run, tmp_path):
    from google.protobuf import json_format

    from r1.export.triton import parse_config

    with serving(ServeConfig(model=str(mlp_run), max_batch=8, max_wait_ms=2, warmup_runs=1,
                             inference="thread")) as (_, client):
        served = client.get_model_config("mlp")
    res = run_cli("export", str(mlp_run), "--format", "triton", "--out", str(tmp_path / "repo"), "--max-batch", "8",
                  "export.triton_queue_delay_us=2000")
    assert res.returncode == 0, res.stderr
    written = parse_config((tmp_path / "repo" / "mlp" / "config.pbtxt").read_text())
    assert served == _numbers(json_format.MessageToDict(written, preserving_proto_field_name=True))
    assert served["max_batch_size"] == 8 and served["input"][0]["dims"] == [3, 8, 8]


def _numbers(value):
    """protobuf's JSON writes 64-bit integers as strings; Triton's config JSON writes numbers."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else value


# ------------------------------------------------------------------------------------------- bad input
def _binary_body(header: dict, blob: bytes) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + blob, {"Inference-Header-Content-Length": str(len(head)), "content-type": "application/octet-stream"}


IMAGE = {"name": "image", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": [1] * 12}
BAD = [  # (id, path under /v2/models/, request body or (bytes, headers), status)
    ("unknown-model", "nope/infer", {"inputs": [IMAGE]}, 404),
    ("unknown-version", "{m}/versions/v7/infer", {"inputs": [IMAGE]}, 404),
    ("wrong-datatype", "{m}/infer", {"inputs": [{**IMAGE, "datatype": "FP32", "data": [0.5] * 12}]}, 400),
    ("shape-not-data", "{m}/infer", {"inputs": [{**IMAGE, "shape": [1, 3, 3, 3]}]}, 400),
    ("wrong-channels", "{m}/infer", {"inputs": [{**IMAGE, "shape": [1, 2, 3, 2]}]}, 400),
    ("wrong-rank", "{m}/infer", {"inputs": [{**IMAGE, "shape": [12]}]}, 400),
    ("no-inputs", "{m}/infer", {"inputs": []}, 400),
    ("unknown-input", "{m}/infer", {"inputs": [IMAGE, {**IMAGE, "name": "extra"}]}, 400),
    ("value-out-of-range", "{m}/infer", {"inputs": [{**IMAGE, "data": [300] * 12}]}, 400),
    ("strings-as-pixels", "{m}/infer", {"inputs": [{**IMAGE, "data": ["a"] * 12}]}, 400),
    ("unknown-output", "{m}/infer", {"inputs": [IMAGE], "outputs": [{"name": "logits"}]}, 400),
    ("unknown-parameter", "{m}/infer", {"inputs": [IMAGE], "parameters": {"temprature": 1}}, 400),
    ("bad-top-k", "{m}/infer", {"inputs": [IMAGE], "parameters": {"top_k": 0}}, 400),
    ("over-max-batch", "{m}/infer", {"inputs": [{**IMAGE, "shape": [9, 2, 2, 3], "data": [1] * 108}]}, 400),
    ("header-length-lies", "{m}/infer", (b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}), 400),
    ("header-length-short", "{m}/infer", (json.dumps({"inputs": [IMAGE]}).encode(),
                                          {"Inference-Header-Content-Length": "10"}), 400),
    ("binary-size-lies", "{m}/infer", _binary_body({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [
        1, 2, 2, 3], "parameters": {"binary_data_size": 40}}]}, bytes(12)), 400),
    ("binary-shape-not-data", "{m}/infer", _binary_body({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [
        1, 2, 2, 3], "parameters": {"binary_data_size": 10}}]}, bytes(10)), 400),
    ("binary-left-over", "{m}/infer", _binary_body({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [
        1, 2, 2, 3], "parameters": {"binary_data_size": 12}}]}, bytes(20)), 400),
    ("malformed-json", "{m}/infer", (b'{"inputs": [', {"content-type": "application/json"}), 400),
    ("classification", "{m}/infer", {"inputs": [IMAGE], "outputs": [{"name": "score", "parameters": {
        "classification": 2}}]}, 400),
    ("gzip-bomb", "{m}/infer", (gzip.compress(b" " * (9 << 20)), {"content-encoding": "gzip"}), 413),
    ("not-gzip", "{m}/infer", (b"plain", {"content-encoding": "gzip"}), 400),
    ("metadata-unknown", "nope", None, 404),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_requests_are_4xx_with_the_protocol_error_body(cls_server, trained_digits, case, caplog):
    base, _ = cls_server
    _, path, body, status = case
    url = f"{base}/v2/models/{path.format(m=trained_digits.name)}"
    with caplog.at_level(logging.WARNING):
        if body is None:
            r = CLIENT.get(url)
        elif isinstance(body, tuple):
            r = CLIENT.post(url, content=body[0], headers=body[1])
        else:
            r = CLIENT.post(url, json=body)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["error"], str) and r.json()["error"]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR or rec.exc_info]


def test_bad_text_and_image_question_requests(lm_server, trained_mm, scene_png):
    base, client = lm_server
    gen = base + "/v2/models/lm/generate"
    for body, status in [
            ({"text_input": "abc", "parameters": {"stop": [str(i) for i in range(2000)]}}, 400),
            ({"text_input": "abc", "parameters": {"max_tokens": 10_000}}, 422),
            ({"text_input": "abc", "parameters": {"temperature": float("nan")}}, 422),
            ({"text_input": "abc", "image": "x"}, 400),
            ({"text_input": 7}, 400)]:
        r = CLIENT.post(gen, content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code == status and "error" in r.json(), (body, r.text)
    assert CLIENT.post(gen, json={"text_input": "abc", "parameters": {"max_tokens": 3}}).status_code == 200
    # the BYTES element of text must be UTF-8
    blob = struct.pack("<I", 2) + b"\xff\xfe"
    body, headers = _binary_body({"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1],
                                              "parameters": {"binary_data_size": len(blob)}}]}, blob)
    assert CLIENT.post(base + "/v2/models/lm/infer", content=body, headers=headers).status_code == 400
    with serving(ServeConfig(model=str(trained_mm), warmup_runs=1, inference="thread")) as (mm, _):
        for image in (b"not an image", base64.b64encode(b"not an image either"), b""):
            blob = b"".join(struct.pack("<I", len(x)) + x for x in (image, QUESTION.encode()))
            body, headers = _binary_body({"inputs": [
                {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 4 + len(image)}},
                {"name": "question", "datatype": "BYTES", "shape": [1],
                 "parameters": {"binary_data_size": 4 + len(QUESTION)}}]}, blob)
            r = CLIENT.post(mm + "/v2/models/mm/infer", content=body, headers=headers)
            assert r.status_code == 400 and "image" in r.json()["error"], r.text
        ok = CLIENT.post(mm + "/v2/models/mm/generate", json={"image": base64.b64encode(scene_png).decode(),
                                                              "question": QUESTION})
        assert ok.status_code == 200 and isinstance(ok.json()["answer"], str), ok.text
