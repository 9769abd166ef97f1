"""Image+text (mm) models through the server: multipart `file` + `text` or JSON {"image", "text"}
-> answer, probability, top_k (the local predictor's answer), batched; every bad request a 4xx."""
from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

import r1
from r1.bench.load import wait_ready
from r1.serve import ServeConfig, create_app
from tests.serve.helpers import png_bytes, running_server

CLIENT = httpx.Client(timeout=60.0)
QUESTION = "what is the shape of the red object?"


@pytest.fixture(scope="module")
def scene_png():
    from r1.models.mm.data import generate_split

    buf = io.BytesIO()
    Image.fromarray(generate_split(2, 75, 4, 0, 2)["images"][0].permute(1, 2, 0).numpy()).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def url(trained_mm):
    cfg = ServeConfig(model=str(trained_mm), max_batch=8, max_text_chars=300, warmup_runs=1)
    with running_server(create_app(cfg)) as (base, _):
        wait_ready(base, timeout=90)
        yield base


def test_multipart_and_json_answer_like_the_local_predictor(url, trained_mm, scene_png):
    local = r1.load(trained_mm).predict([(Image.open(io.BytesIO(scene_png)), QUESTION)], top_k=3)[0]
    assert type(local).__name__ == "AnswerResult" and local.answer == local["answer"]  # typed, attribute access
    assert local.top_k[0].answer == local["top_k"][0]["answer"]
    r = CLIENT.post(url + "/v1/predict", files={"file": ("s.png", scene_png, "image/png")},
                    data={"text": QUESTION, "top_k": "3"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["family"] == "mm" and set(body["result"]) == {"answer", "probability", "top_k", "unknown_words"}
    assert body["result"]["answer"] == local["answer"] and len(body["result"]["top_k"]) == 3
    assert abs(body["result"]["probability"] - local["probability"]) < 1e-4
    j = CLIENT.post(url + "/v1/predict", json={"image": base64.b64encode(scene_png).decode(), "text": QUESTION,
                                               "top_k": 2})
    assert j.status_code == 200 and j.json()["result"]["answer"] == local["answer"]
    assert len(j.json()["result"]["top_k"]) == 2
    # `question` (the name `r1 predict --question` uses) is an alias of `text`, in both body forms
    q = CLIENT.post(url + "/v1/predict", files={"file": ("s.png", scene_png, "image/png")}, data={"question": QUESTION})
    assert q.status_code == 200 and q.json()["result"]["answer"] == local["answer"], q.text
    q = CLIENT.post(url + "/v1/predict", json={"image": base64.b64encode(scene_png).decode(), "question": QUESTION})
    assert q.status_code == 200 and q.json()["result"]["answer"] == local["answer"], q.text


def test_concurrent_pairs_are_batched_and_each_gets_its_own_answer(url, trained_mm, scene_png):
    questions = [QUESTION, "how many objects have the same shape as the blue object?",
                 "is the green object on the left of the image?", "what shape is the yellow object?"] * 4
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda q: CLIENT.post(url + "/v1/predict", data={"text": q},
                                                  files={"file": ("s.png", scene_png, "image/png")}), questions))
    local = r1.load(trained_mm).predict([(Image.open(io.BytesIO(scene_png)), q) for q in questions])
    assert all(r.status_code == 200 for r in got)
    assert [r.json()["result"]["answer"] for r in got] == [x["answer"] for x in local]


def test_bad_multimodal_requests_are_4xx(url, scene_png):
    b64 = base64.b64encode(scene_png).decode()
    png = ("s.png", scene_png, "image/png")
    cases = [  # (how it is sent, expected status, error code)
        (dict(files={"file": png}), 422, "missing_field"),                              # no text
        (dict(files={"text": (None, QUESTION)}), 422, "missing_field"),                # no image (multipart)
        (dict(data={"text": QUESTION}), 415, "unsupported_media_type"),                # a form without a file
        (dict(json={"image": b64}), 422, "missing_field"),                             # no text (JSON)
        (dict(json={"text": QUESTION}), 422, "missing_field"),                         # no image (JSON)
        (dict(json={"image": b64, "text": 5}), 422, "invalid_request"),                # text not a string
        (dict(json={"image": 5, "text": QUESTION}), 422, "invalid_request"),           # image not a string
        (dict(json={"image": b64, "text": "   "}), 422, "invalid_request"),            # blank question
        (dict(json={"image": b64, "text": "x" * 301}), 413, "text_too_long"),          # oversized question
        (dict(json={"image": b64, "text": QUESTION, "question": QUESTION}), 422, "invalid_request"),  # both names
        (dict(files={"file": png}, data={"text": QUESTION, "question": QUESTION}), 422, "invalid_request"),
        (dict(json={"image": "@@notbase64@@", "text": QUESTION}), 400, "bad_base64"),
        (dict(files={"file": ("s.png", b"not an image", "image/png")}, data={"text": QUESTION}), 400, None),
        (dict(content=scene_png, headers={"Content-Type": "image/png"}), 415, "unsupported_media_type"),
        (dict(json={"image": b64, "text": QUESTION, "top_k": 0}), 422, "invalid_request"),
        (dict(json={"image": b64, "text": QUESTION, "extra": 1}), 422, "invalid_request"),
        (dict(json={"image": b64, "text": QUESTION, "top_k": "3"}), 422, "invalid_request"),  # strict int
        (dict(json=[1, 2]), 422, "invalid_request"),
        (dict(files={"file": ("s.png", png_bytes((5000, 5000)), "image/png")}, data={"text": QUESTION}), 413, None),
    ]
    for kwargs, status, code in cases:
        r = CLIENT.post(url + "/v1/predict", **kwargs)
        assert r.status_code == status, (kwargs.keys(), r.status_code, r.text[:200])
        if code:
            assert r.json()["error"] == code, r.text[:200]
    assert CLIENT.get(url + "/healthz").status_code == 200
