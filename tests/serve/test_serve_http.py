"""The server as a client sees it: a real uvicorn on a loopback port, a trained digits model.

Every bad input gets its documented 4xx with a JSON error body, never a 500."""
from __future__ import annotations

import base64
import io
import struct
import zlib

import httpx
import pytest
from PIL import Image

from r1.bench.load import wait_ready
from r1.serve import ServeConfig, create_app
from tests.serve.helpers import png_bytes, running_server

LIMIT_BYTES, LIMIT_PIXELS = 256 * 1024, 1_000_000
CLIENT = httpx.Client(timeout=30.0, limits=httpx.Limits(max_connections=16))


@pytest.fixture(scope="module")
def url(trained_digits):
    cfg = ServeConfig(model=str(trained_digits), runtime="torch", max_batch=8, max_wait_ms=2,
                      max_body_bytes=LIMIT_BYTES, max_pixels=LIMIT_PIXELS, warmup_runs=1)
    with running_server(create_app(cfg)) as (base, _):
        wait_ready(base, timeout=60)
        yield base


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h but holds one tiny compressed row (a bomb's signature)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _bomb_png() -> bytes:
    """2000 x 2000 = 4 M pixels (over the 1 M limit) in a few KB."""
    buf = io.BytesIO()
    Image.new("L", (2000, 2000)).save(buf, format="PNG")
    return buf.getvalue()


GOOD = png_bytes()

# (id, request kwargs for httpx, expected status)
BAD_INPUTS = [
    ("text-plain", dict(content=b"hello", headers={"content-type": "text/plain"}), 415),
    ("no-content-type", dict(content=b"\x89PNG"), 415),
    ("xml", dict(content=b"<a/>", headers={"content-type": "application/xml"}), 415),
    ("form-urlencoded", dict(data={"file": "x"}), 415),
    ("json-malformed", dict(content=b'{"image": ', headers={"content-type": "application/json"}), 400),
    ("json-not-utf8", dict(content=b"\xff\xfe{}", headers={"content-type": "application/json"}), 400),
    ("json-empty-body", dict(content=b"", headers={"content-type": "application/json"}), 400),
    ("json-array", dict(json=[1, 2]), 422),
    ("json-missing-image", dict(json={}), 422),
    ("json-image-not-string", dict(json={"image": 5}), 422),
    ("json-extra-field", dict(json={"image": _b64(GOOD), "colour": "red"}), 422),
    ("json-top-k-zero", dict(json={"image": _b64(GOOD), "top_k": 0}), 422),
    ("json-text-for-image-model", dict(json={"text": "hello"}), 422),
    ("json-bad-base64", dict(json={"image": "!!not base64!!"}), 400),
    ("json-empty-image", dict(json={"image": ""}), 400),
    ("json-base64-not-image", dict(json={"image": _b64(b"hello world")}), 400),
    ("multipart-missing-file", dict(files={"other": ("a.png", GOOD, "image/png")}), 422),
    ("multipart-file-as-text", dict(data={"file": "not a file"}, files={"x": ("x", b"1")}), 422),
    ("multipart-empty-file", dict(files={"file": ("a.png", b"", "image/png")}), 400),
    ("multipart-garbage-file", dict(files={"file": ("a.png", b"\x00" * 100, "image/png")}), 400),
    ("multipart-bad-top-k", dict(files={"file": ("a.png", GOOD, "image/png")}, data={"top_k": "many"}), 422),
    ("multipart-no-boundary", dict(content=b"--x\r\n", headers={"content-type": "multipart/form-data"}), 400),
    ("multipart-truncated",  # the part never ends, so no `file` field is complete
     dict(content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
          headers={"content-type": "multipart/form-data; boundary=b"}), 422),
    ("raw-truncated-png", dict(content=GOOD[: len(GOOD) // 2], headers={"content-type": "image/png"}), 400),
    ("raw-garbage", dict(content=b"GIF89a" + b"\x00" * 10, headers={"content-type": "image/gif"}), 400),
    ("raw-empty", dict(content=b"", headers={"content-type": "image/png"}), 400),
    ("body-too-large", dict(content=b"\0" * (LIMIT_BYTES + 1), headers={"content-type": "image/png"}), 413),
    ("body-too-large-chunked",  # no Content-Length: counted while streaming
     dict(content=[b"\0" * 65536] * 6, headers={"content-type": "image/png"}), 413),
    ("pixel-bomb", dict(content=_bomb_png(), headers={"content-type": "image/png"}), 413),
    ("header-claims-huge",
     dict(content=_png_header_only(100_000, 100_000), headers={"content-type": "image/png"}), 413),
    ("header-claims-huge-json", dict(json={"image": _b64(_png_header_only(50_000, 50_000))}), 413),
    ("zero-width-png", dict(content=_png_header_only(0, 10), headers={"content-type": "image/png"}), 400),
]


@pytest.mark.parametrize("kwargs,status", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_4xx_json(url, kwargs, status):
    r = CLIENT.post(url + "/v1/predict", **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status and body["error"] and body["detail"]


def test_wrong_method_and_path(url):
    r = CLIENT.get(url + "/v1/predict")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    r = CLIENT.get(url + "/v2/nothing")
    assert r.status_code == 404 and r.json()["status"] == 404


@pytest.mark.parametrize("fmt,mode", [("PNG", "RGB"), ("PNG", "L"), ("PNG", "RGBA"), ("JPEG", "RGB"),
                                      ("BMP", "RGB"), ("GIF", "P")])
def test_unusual_but_valid_images_work(url, fmt, mode):
    data = png_bytes(size=(40, 28), mode=mode, fmt=fmt)
    r = CLIENT.post(url + "/v1/predict", content=data, headers={"content-type": f"image/{fmt.lower()}"})
    assert r.status_code == 200, r.text


def test_sixteen_bit_png_is_not_a_500(url):
    buf = io.BytesIO()
    Image.new("I;16", (20, 20), 300).save(buf, format="PNG")
    r = CLIENT.post(url + "/v1/predict", content=buf.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code in (200, 400), r.text  # classified, or refused as an unsupported mode


def test_three_encodings_same_answer(url):
    a = CLIENT.post(url + "/v1/predict", files={"file": ("d.png", GOOD, "image/png")}).json()
    b = CLIENT.post(url + "/v1/predict", json={"image": _b64(GOOD), "top_k": 2}).json()
    c = CLIENT.post(url + "/v1/predict?top_k=1", content=GOOD, headers={"content-type": "image/png"}).json()
    assert a["family"] == "cls" and a["runtime"] == "torch" and a["latency_ms"] > 0
    assert a["result"]["label"] == b["result"]["label"] == c["result"]["label"]
    assert [len(x["result"]["top"]) for x in (a, b, c)] == [3, 2, 1]
    assert abs(a["result"]["score"] - b["result"]["score"]) < 1e-6


def test_health_ready_metrics_docs(url):
    assert CLIENT.get(url + "/healthz").json() == {"status": "ok"}
    ready = CLIENT.get(url + "/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] and ready.json()["family"] == "cls"
    CLIENT.post(url + "/v1/predict", content=GOOD, headers={"content-type": "image/png"})
    text = CLIENT.get(url + "/metrics").text
    for name in ("r1_requests_total", "r1_request_duration_seconds_bucket", "r1_queue_wait_seconds_bucket",
                 "r1_batch_size_bucket", "r1_queue_depth", "r1_model_load_seconds", "r1_ready 1.0"):
        assert name in text, name
    assert 'r1_requests_total{route="/v1/predict",status="200"}' in text
    spec = CLIENT.get(url + "/openapi.json").json()
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json", "image/*"} <= set(body)
    assert {"PredictResponse", "ErrorResponse", "Classification"} <= set(spec["components"]["schemas"])
    assert [s["title"] for s in body["application/json"]["schema"]["oneOf"]] == ["ImageRequest", "PairRequest", "TextRequest"]
    assert CLIENT.get(url + "/docs").status_code == 200


def test_error_bodies_are_json_under_concurrency(url):
    """Mixed good and bad requests at once: good ones still succeed, bad ones 4xx."""
    import concurrent.futures as cf

    def one(i):
        if i % 2:
            return CLIENT.post(url + "/v1/predict", content=GOOD, headers={"content-type": "image/png"}).status_code
        return CLIENT.post(url + "/v1/predict", json={"image": "###"}).status_code

    with cf.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(24)))
    assert codes == [400 if i % 2 == 0 else 200 for i in range(24)]
