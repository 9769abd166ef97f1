"""Language models through the server: JSON {"text": ...} -> generated text (KV cache), the same
text as `r1.models.lm.generate` for the same seed, and every bad input a 4xx JSON error, never a 500."""
from __future__ import annotations

import httpx
import pytest
import torch

from r1.artifacts import save_artifact
from r1.bench.load import wait_ready
from r1.inference.predictor import Predictor
from r1.models.lm.generate import default_exit_threshold, generate
from r1.models.lm.predictor import TextPredictor
from r1.models.lm.tokenizer import CharTokenizer
from r1.registry import build_model
from r1.serve import ServeConfig, create_app
from tests.serve.helpers import png_bytes, running_server

CHARS = "abcdefghijklmnopqrstuvwxyz .,\n"
CLIENT = httpx.Client(timeout=60.0)


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    torch.manual_seed(0)
    tok = CharTokenizer(CHARS, specials=["<|endoftext|>"])
    model = build_model("r1_lm", flavor="tiny", num_classes=tok.vocab_size).eval()
    out = tmp_path_factory.mktemp("lm") / "lm"
    save_artifact(model, out, {"task": "lm", "tokenizer": tok.to_dict(), "vocab_size": tok.vocab_size})
    return out


@pytest.fixture(scope="module")
def url(lm_dir):
    cfg = ServeConfig(model=str(lm_dir), max_batch=4, max_new_tokens=40, max_text_chars=200, warmup_runs=1)
    with running_server(create_app(cfg)) as (base, _):  # the default worker process
        wait_ready(base, timeout=90)
        yield base


def test_text_predictor_matches_generate(lm_dir):
    p = Predictor.load(lm_dir, threads=1)
    assert isinstance(p, TextPredictor) and p.family == "lm"
    rec = p.generate("to be or not", max_new_tokens=12, temperature=0.0)
    ids = p.tokenizer.encode("to be or not")
    ref = generate(p.model, torch.tensor([ids]), 12, temperature=0.0, exit_threshold=default_exit_threshold(p.model),
                   eos_id=p.tokenizer.token_to_id("<|endoftext|>"))[0, len(ids):].tolist()
    assert rec["text"] == p.tokenizer.decode(ref)
    assert (rec["prompt_tokens"], rec["context_tokens"], rec["generated_tokens"]) == (12, 12, 12)
    a, b = (p.generate("abc", 10, temperature=1.0, seed=7) for _ in range(2))
    assert a == b and a["seed"] == 7  # same seed, same text
    with pytest.raises(Exception, match="vocabulary"):
        p.generate("ABC", 5)  # no character of it is known to this char tokenizer
    with pytest.raises(Exception, match="runs with torch, onnx, onnx-int8 only"):
        Predictor.load(lm_dir, runtime="tensorrt")


def test_generate_over_http(url, lm_dir):
    r = CLIENT.post(url + "/v1/predict", json={"text": "to be or not", "max_new_tokens": 12, "temperature": 0.0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["family"] == "lm" and body["runtime"] == "torch"
    res = body["result"]
    assert set(res) == {"text", "prompt_tokens", "context_tokens", "generated_tokens", "finish_reason", "seed",
                        "unknown_words"}
    assert res["generated_tokens"] == 12 and res["finish_reason"] == "length"
    local = TextPredictor.load(lm_dir).generate("to be or not", 12, temperature=0.0)
    assert res["text"] == local["text"]
    # sampled: reproducible with the seed the server reports
    a = CLIENT.post(url + "/v1/predict", json={"text": "abc", "max_new_tokens": 8, "top_k": 5}).json()["result"]
    b = CLIENT.post(url + "/v1/predict", json={"text": "abc", "max_new_tokens": 8, "top_k": 5,
                                               "seed": a["seed"]}).json()["result"]
    assert a["text"] == b["text"]
    # a prompt longer than the context window is cut to its end, not refused
    long = CLIENT.post(url + "/v1/predict", json={"text": "ab " * 60, "max_new_tokens": 3}).json()["result"]
    assert long["prompt_tokens"] == 180 and long["context_tokens"] == 32


def test_concurrent_generations(url):
    import concurrent.futures as cf

    def one(i):
        return CLIENT.post(url + "/v1/predict", json={"text": f"{'abc'[i % 3]} x", "max_new_tokens": 6,
                                                      "temperature": 0.0})

    with cf.ThreadPoolExecutor(6) as pool:
        rs = list(pool.map(one, range(12)))
    assert [r.status_code for r in rs] == [200] * 12
    texts = [r.json()["result"]["text"] for r in rs]
    assert texts[0] == texts[3] == texts[6] and texts[1] == texts[4]  # same greedy prompt, same text


BAD = [
    ("empty-text", {"text": ""}, 422),
    ("missing-text", {"max_new_tokens": 5}, 422),
    ("text-not-string", {"text": 5}, 422),
    ("text-list", {"text": ["a"]}, 422),
    ("text-too-long", {"text": "a" * 201}, 413),  # the server's --max-text-chars 200: one status everywhere
    ("max-new-tokens-zero", {"text": "a", "max_new_tokens": 0}, 422),
    ("max-new-tokens-over-server", {"text": "a", "max_new_tokens": 41}, 422),
    ("max-new-tokens-over-schema", {"text": "a", "max_new_tokens": 10 ** 9}, 422),
    ("max-new-tokens-string", {"text": "a", "max_new_tokens": "5"}, 422),
    ("max-new-tokens-float", {"text": "a", "max_new_tokens": 5.5}, 422),
    ("max-new-tokens-bool", {"text": "a", "max_new_tokens": True}, 422),
    ("temperature-negative", {"text": "a", "temperature": -1}, 422),
    ("temperature-string", {"text": "a", "temperature": "hot"}, 422),
    ("top-p-zero", {"text": "a", "top_p": 0}, 422),
    ("top-k-negative", {"text": "a", "top_k": -1}, 422),
    ("seed-negative", {"text": "a", "seed": -1}, 422),
    ("extra-field", {"text": "a", "beam": 4}, 422),
    ("image-to-lm", {"image": "aGVsbG8="}, 422),
    ("unknown-characters-only", {"text": "ABC"}, 422),
    ("json-array", [1, 2], 422),
]


@pytest.mark.parametrize("body,status", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_text_requests(url, body, status):
    r = CLIENT.post(url + "/v1/predict", json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["status"] == status and err["error"] and err["detail"]


@pytest.mark.parametrize("kwargs,status", [
    (dict(content=b'{"text": ', headers={"content-type": "application/json"}), 400),
    (dict(content=b"NaN", headers={"content-type": "application/json"}), 422),
    (dict(content=b'{"text": "a", "temperature": NaN}', headers={"content-type": "application/json"}), 422),
    (dict(content=b"to be", headers={"content-type": "text/plain"}), 415),
    (dict(content=png_bytes(), headers={"content-type": "image/png"}), 415),
    (dict(files={"file": ("a.png", png_bytes(), "image/png")}), 415),
], ids=["malformed-json", "json-scalar", "json-nan", "text-plain", "image-body", "multipart"])
def test_bad_bodies_for_lm(url, kwargs, status):
    r = CLIENT.post(url + "/v1/predict", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["status"] == status


def test_docs_describe_text_requests_and_generation(url):
    spec = CLIENT.get(url + "/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"Generation", "Detections", "Classification"} <= set(schemas)
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    text = {s["title"]: s for s in body}["TextRequest"]["properties"]
    assert text["max_new_tokens"]["minimum"] == 1 and text["text"]["minLength"] == 1
    assert set(schemas["Generation"]["required"]) >= {"text", "generated_tokens", "finish_reason"}
    ready = CLIENT.get(url + "/readyz").json()
    assert ready["ready"] and ready["family"] == "lm"


def test_serve_cli_refuses_other_runtimes_for_lm(lm_dir):
    from tests.conftest import run_cli

    res = run_cli("serve", str(lm_dir), "--runtime", "onnx-fp16")  # onnx / onnx-int8 serve (tests/lm/test_onnx.py)
    assert res.returncode == 2 and "'onnx-fp16' is not allowed" in res.stderr
    res = run_cli("serve", str(lm_dir), "--inference", "fork")
    assert res.returncode == 2 and "--inference" in res.stderr


# ----------------------------------------------------------------- issue 17 item 2: one bad request, one failure
def test_extreme_sampling_settings_are_clamped_not_500(url):
    """`temperature 1e-45` / `top_p 1e-46` used to give 500 "probability tensor contains inf/nan" to
    their whole batch: now they sample (like greedy) and their batch-mates are unaffected."""
    import concurrent.futures as cf

    bodies = [{"text": "to be", "max_new_tokens": 5, "temperature": 1e-45},
              {"text": "to be", "max_new_tokens": 5, "top_p": 1e-46},
              {"text": "to be", "max_new_tokens": 5, "temperature": 0.0},
              {"text": "abc", "max_new_tokens": 5, "top_k": 3}] * 2
    with cf.ThreadPoolExecutor(8) as pool:
        rs = list(pool.map(lambda b: CLIENT.post(url + "/v1/predict", json=b), bodies))
    assert [r.status_code for r in rs] == [200] * 8, [r.text for r in rs]
    greedy = rs[2].json()["result"]["text"]
    assert rs[0].json()["result"]["text"] == rs[1].json()["result"]["text"] == greedy


def test_sample_next_validates_and_clamps():
    from r1.errors import ConfigError, NonFiniteOutput
    from r1.models.lm.generate import sample_next

    logits = torch.tensor([[1.0, 3.0, 2.0]])
    assert sample_next(logits, 1e-45).item() == 1 and sample_next(logits, 1.0, top_p=1e-46).item() == 1
    for bad, key in [(dict(temperature=float("nan")), "temperature"), (dict(temperature=-1.0), "temperature"),
                     (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(top_k=True), "top_k"),
                     (dict(top_k=-1), "top_k")]:
        with pytest.raises(ConfigError, match=key):
            sample_next(logits, **{"temperature": 1.0, **bad})
    with pytest.raises(NonFiniteOutput, match="NaN"):
        sample_next(torch.tensor([[1.0, float("nan")]]), 0.0)


def test_generate_cli_rejects_bad_sampling_and_clamps_tiny(lm_dir):
    from tests.conftest import run_cli

    res = run_cli("generate", str(lm_dir), "--prompt", "ab", "--top-p", "0")
    assert res.returncode == 2 and "--top-p: 0.0 is not allowed" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("generate", str(lm_dir), "--prompt", "ab", "--temperature", "nan")
    assert res.returncode == 2 and "--temperature" in res.stderr
    res = run_cli("generate", str(lm_dir), "--prompt", "ab", "--temperature", "1e-45", "--max-new-tokens", "4")
    assert res.returncode == 0, res.stderr
