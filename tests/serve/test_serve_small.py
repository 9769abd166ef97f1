"""Issue 17 item 6, the small ones: ports out of range or taken (exit 2 naming the port), the model's
name (not its server path) in responses, no resolved paths in /readyz details, no `r1-onnx-*`
folder left in the temp directory per `--runtime onnx` start, a JPEG whose header claims more
pixels than its data holds, and `"top_k": true`."""
from __future__ import annotations

import base64
import io
import shutil
import socket
import struct
import tempfile
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from r1.bench.load import wait_ready
from r1.serve import ServeConfig, create_app
from tests.conftest import run_cli
from tests.serve.helpers import FakeLoader, png_bytes, running_server

CLIENT = httpx.Client(timeout=60.0)


def test_port_out_of_range_and_port_in_use_exit_2(trained_digits):
    res = run_cli("serve", str(trained_digits), "--port", "99999")
    assert res.returncode == 2 and "--port (serve.port): 99999 is above the maximum 65535" in res.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = run_cli("serve", str(trained_digits), "--port", str(port))
    assert res.returncode == 2 and f"--port {port}: cannot listen on 127.0.0.1:{port}: already in use" in res.stderr
    assert "Traceback" not in res.stderr


def _forged_jpeg(w: int, h: int) -> bytes:
    """A 32x32 JPEG whose frame header says w x h."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, h, w)
    return bytes(data)


def test_bad_image_requests_and_model_name():
    cfg = ServeConfig(model="/srv/secret/place/runs/digits", runtime="fake", warmup_runs=0, max_wait_ms=1,
                      inference="thread")
    with running_server(create_app(cfg, loader=FakeLoader())) as (url, _):
        wait_ready(url, timeout=60)
        r = CLIENT.post(url + "/v1/predict", content=_forged_jpeg(4000, 4000), headers={"content-type": "image/jpeg"})
        assert r.status_code == 400 and "too short for its declared 4000x4000" in r.json()["detail"], r.text
        good = io.BytesIO()
        Image.new("RGB", (64, 48), (10, 200, 30)).save(good, "JPEG")  # a real, very compressible JPEG passes
        r = CLIENT.post(url + "/v1/predict", content=good.getvalue(), headers={"content-type": "image/jpeg"})
        assert r.status_code == 200 and r.json()["model"] == "digits", r.text
        image = base64.b64encode(png_bytes()).decode()
        r = CLIENT.post(url + "/v1/predict", json={"image": image, "top_k": True})
        assert r.status_code == 422 and "top_k" in r.json()["detail"], r.text
        assert CLIENT.post(url + "/v1/predict", json={"image": image, "top_k": 1}).status_code == 200
        assert CLIENT.get(url + "/readyz").json()["model"] == "digits"


def test_failed_load_details_name_no_server_paths(tmp_path):
    missing = tmp_path / "private" / "no-such-run"
    with running_server(create_app(ServeConfig(model=str(missing), inference="thread"))) as (url, _):
        for _ in range(600):
            r = CLIENT.get(url + "/readyz")
            if r.json()["detail"] != "loading":
                break
            time.sleep(0.05)
        body = r.json()
        assert r.status_code == 503 and "no-such-run" in body["detail"] and "not found" in body["detail"]
        assert str(tmp_path) not in r.text and body["model"] == "no-such-run"
        p = CLIENT.post(url + "/v1/predict", content=png_bytes(), headers={"content-type": "image/png"})
        assert p.status_code == 503 and str(tmp_path) not in p.text


def test_onnx_runtime_reuses_the_run_dir_cache_and_leaves_no_temp_folder(trained_digits, tmp_path, monkeypatch):
    run = tmp_path / "digits-onnx"
    run.mkdir()
    for name in ("model.safetensors", "model.json"):
        shutil.copy(trained_digits / name, run / name)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # the worker process's temp dir
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    for _ in range(2):  # export on the first start, reuse on the second
        cfg = ServeConfig(model=str(run), runtime="onnx", warmup_runs=1, inference="thread")
        with running_server(create_app(cfg)) as (url, _):
            wait_ready(url, timeout=120)
            r = CLIENT.post(url + "/v1/predict", content=png_bytes(), headers={"content-type": "image/png"})
            assert r.status_code == 200 and r.json()["runtime"] == "onnx" and r.json()["model"] == "digits-onnx"
    assert len(list((run / "onnx").glob("model-*.onnx"))) == 1
    assert not [p.name for p in tmp.iterdir() if p.name.startswith("r1-onnx-")]


@pytest.mark.parametrize("size", [(4000, 4000)])
def test_forged_jpeg_rejected_by_decoder(size):
    from r1.input_kinds.http import ApiError
    from r1.input_kinds.image import decode_image

    with pytest.raises(ApiError, match="forged"):
        decode_image(_forged_jpeg(*size), 4096 * 4096)
