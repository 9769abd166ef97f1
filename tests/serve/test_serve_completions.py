"""`POST /v1/completions` (issue 15 section 4): the OpenAI schema over a real language model in the
worker process, server-sent events read by real streaming clients (httpx and the `openai`
package), stop strings cut in the server, cancellation on disconnect, 400s and 404s."""
from __future__ import annotations

import json
import time

import httpx
import pytest
import torch

from r1.artifacts import save_artifact
from r1.bench.load import wait_ready
from r1.models.lm.predictor import TextPredictor
from r1.models.lm.tokenizer import CharTokenizer
from r1.registry import build_model
from r1.serve import ServeConfig, create_app
from r1.serve.completions import StopCutter
from tests.serve.helpers import FakeLoader, FakeStreamLoader, running_server

CHARS = "abcdefghijklmnopqrstuvwxyz .,\n"
CLIENT = httpx.Client(timeout=60.0)


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    torch.manual_seed(0)
    tok = CharTokenizer(CHARS, specials=["<|endoftext|>"])
    model = build_model("r1_lm", flavor="tiny", num_classes=tok.vocab_size).eval()
    out = tmp_path_factory.mktemp("lm") / "poet"
    save_artifact(model, out, {"task": "lm", "tokenizer": tok.to_dict(), "vocab_size": tok.vocab_size})
    return out


@pytest.fixture(scope="module")
def url(lm_dir):
    cfg = ServeConfig(model=str(lm_dir), max_batch=4, max_new_tokens=40, max_text_chars=200, warmup_runs=1)
    with running_server(create_app(cfg)) as (base, _):  # the default worker process
        wait_ready(base, timeout=90)
        yield base


def _events(response) -> list:
    out = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_completion_matches_local_generation(url, lm_dir):
    r = CLIENT.post(url + "/v1/completions", json={"model": "poet", "prompt": "to be or not", "max_tokens": 12,
                                                   "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "object", "created", "model", "variant", "choices", "usage"}
    assert body["object"] == "text_completion" and body["model"] == "poet" and body["id"].startswith("cmpl-")
    assert r.headers["x-r1-variant"] == body["variant"] == "poet"
    local = TextPredictor.load(lm_dir).generate("to be or not", 12, temperature=0.0)
    assert body["choices"] == [{"text": local["text"], "index": 0, "logprobs": None, "finish_reason": "length",
                                "unknown_words": []}]
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 12, "total_tokens": 24}
    two = CLIENT.post(url + "/v1/completions", json={"prompt": ["to be or not", "abc"], "max_tokens": 5,
                                                     "temperature": 0}).json()
    assert [c["index"] for c in two["choices"]] == [0, 1] and two["choices"][0]["text"] == local["text"][:5]


def test_streaming_sends_pieces_then_done(url):
    plain = CLIENT.post(url + "/v1/completions", json={"prompt": "to be", "max_tokens": 20, "temperature": 0}).json()
    text = plain["choices"][0]["text"]
    with CLIENT.stream("POST", url + "/v1/completions", json={"prompt": "to be", "max_tokens": 20, "temperature": 0,
                                                             "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) >= 10  # one event per piece, not one at the end
    assert all(c["object"] == "text_completion" and c["choices"][0]["index"] == 0 for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == text
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["usage"]["completion_tokens"] == 20


def test_stop_strings_cut_the_text(url):
    full = CLIENT.post(url + "/v1/completions", json={"prompt": "to be", "max_tokens": 30, "temperature": 0}
                       ).json()["choices"][0]["text"]
    stop = full[6:8]
    want = full[:full.find(stop)]
    body = CLIENT.post(url + "/v1/completions", json={"prompt": "to be", "max_tokens": 30, "temperature": 0,
                                                      "stop": [stop, "never-seen"]}).json()
    assert body["choices"][0]["text"] == want and body["choices"][0]["finish_reason"] == "stop"
    with CLIENT.stream("POST", url + "/v1/completions", json={"prompt": "to be", "max_tokens": 30,
                                                             "temperature": 0, "stop": stop, "stream": True}) as r:
        chunks = _events(r)[:-1]
    assert "".join(c["choices"][0]["text"] for c in chunks) == want
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stop_cutter_holds_back_partial_stops():
    cut = StopCutter(["END"])
    assert [cut.feed(p) for p in ("abc", "E", "N", "x")] == ["a", "b", "c", "E"]  # "EN" could start "END"
    assert cut.flush() == "Nx" and not cut.hit
    cut = StopCutter(["END"])
    out = "".join(cut.feed(p) for p in ("hello E", "N", "D world"))
    assert out == "hello " and cut.hit and cut.flush() == ""
    cut = StopCutter(["END"])
    out = "".join(cut.feed(p) for p in ("a E", "Nx")) + cut.flush()
    assert out == "a ENx" and not cut.hit


@pytest.mark.parametrize("body,msg", [
    ({"prompt": "a", "n": 2}, "n: 2 is not supported"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "a", "max_tokens": 41}, "max_tokens: at most 40"),
    ({"prompt": "a", "temperature": 3}, "temperature"),
    ({"prompt": "a", "top_p": 0}, "top_p"),
    ({"prompt": "a", "stop": ["1", "2", "3", "4", "5"]}, "stop"),
    ({"prompt": "a", "echo": True}, "echo"),
    ({"prompt": "a", "logprobs": 2}, "logprobs"),
    ({"prompt": "a", "beam": 4}, "beam"),
    ({"prompt": "a", "stop": "x" * 257}, "at most 256 characters"),
    ({"prompt": ["a"] * 17}, "at most 16 per request (serve.max_prompts)"),
    ([1, 2], "JSON object"),
], ids=["n", "empty", "empty-list", "max-tokens-0", "max-tokens-over", "temperature", "top-p", "five-stops",
        "echo", "logprobs", "unknown-field", "long-stop", "many-prompts", "array"])
def test_bad_completion_requests_are_400(url, body, msg):
    r = CLIENT.post(url + "/v1/completions", json=body)
    assert r.status_code == 400 and msg in r.json()["detail"], r.text


def test_too_long_prompt_is_413_as_everywhere(url):
    r = CLIENT.post(url + "/v1/completions", json={"prompt": "a" * 201})
    assert r.status_code == 413 and r.json()["error"] == "text_too_long" and "at most 200" in r.json()["detail"]


def test_unknown_model_is_404(url):
    r = CLIENT.post(url + "/v1/completions", json={"model": "gpt-4", "prompt": "a"})
    assert r.status_code == 404 and "'gpt-4' is not served here" in r.json()["detail"]


def test_openai_client_streams(url):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    done = client.completions.create(model="poet", prompt="to be", max_tokens=10, temperature=0)
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 10
    pieces = [c.choices[0].text for c in client.completions.create(model="poet", prompt="to be", max_tokens=10,
                                                                   temperature=0, stream=True)]
    assert len(pieces) >= 5 and "".join(pieces) == done.choices[0].text


def test_image_model_has_no_completions():
    app = create_app(ServeConfig(model="runs/digits", inference="thread", warmup_runs=0), FakeLoader())
    with running_server(app) as (url, _):
        wait_ready(url, timeout=30)
        r = CLIENT.post(url + "/v1/completions", json={"prompt": "a"})
        assert r.status_code == 404 and "takes image, not text" in r.json()["detail"]


@pytest.mark.parametrize("inference", ["thread", "process"])
def test_disconnect_mid_stream_cancels_the_generation(inference):
    cfg = ServeConfig(model="runs/fake-lm", inference=inference, warmup_runs=0, max_new_tokens=4096)
    with running_server(create_app(cfg, FakeStreamLoader())) as (url, _):
        wait_ready(url, timeout=90)
        with httpx.Client(timeout=30) as client:
            with client.stream("POST", url + "/v1/completions", json={"prompt": "slow", "max_tokens": 4000,
                                                                     "stream": True}) as r:
                lines = r.iter_lines()
                got = [next(lines) for _ in range(6)]
                assert any(line.startswith("data: ") for line in got)
            # the stream is closed: the next request must not wait for the 40 s generation
            t0 = time.monotonic()
            r = CLIENT.post(url + "/v1/completions", json={"prompt": "abc", "max_tokens": 3})
            assert r.status_code == 200 and r.json()["choices"][0]["text"] == "cba"
            assert time.monotonic() - t0 < 5
            deadline = time.monotonic() + 10
            while "r1_cancelled_total 1.0" not in CLIENT.get(url + "/metrics").text:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        # a failure before the first piece is a plain HTTP error, not a broken stream
        r = CLIENT.post(url + "/v1/completions", json={"prompt": "boom", "stream": True})
        assert r.status_code == 500 and r.json()["error"] == "generation_failed"
