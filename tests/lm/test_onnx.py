"""Language models in onnxruntime: the KV-cache graph generates what torch generates, at any batch
size and past length; dynamic int8 loads and generates; runtimes are checked with one-line errors."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import r1
from r1.artifacts import save_artifact
from r1.errors import ConfigError
from r1.inference.runtimes import check_runtime
from r1.models.lm.export import step_module
from r1.models.lm.generate import generate
from r1.models.lm.onnx_predictor import OnnxTextPredictor
from r1.models.lm.tokenizer import CharTokenizer
from r1.onnx.export import export_onnx
from r1.onnx.graph import read_onnx_meta
from r1.registry import build_model
from tests.conftest import run_cli

CHARS = "abcdefghijklmnopqrstuvwxyz .,\n"
PROMPTS = ["to be or not", "the quick brown fox", "a", "hello, world.\n", "so it goes and goes and goes"]
MODELS = {"r1_lm": {}, "r1_lm-gqa": {"n_kv_head": 1}, "gpt": {}}


_RUNS: dict[str, object] = {}


def _run_dir(tmp_path_factory, key: str):
    """One untrained tiny run dir per model, made once: the tests only add files to it (its ONNX cache,
    exports), so a later test finds the cached export an earlier one made instead of exporting again."""
    if key not in _RUNS:
        torch.manual_seed(0)
        tok = CharTokenizer(CHARS)  # no <|endoftext|>: greedy runs the full length
        model = build_model(key.split("-")[0], flavor="tiny", num_classes=tok.vocab_size, **MODELS[key]).eval()
        out = tmp_path_factory.mktemp("lm") / key
        save_artifact(model, out, {"task": "lm", "tokenizer": tok.to_dict(), "vocab_size": tok.vocab_size})
        _RUNS[key] = out
    return _RUNS[key]


@pytest.fixture(scope="module", params=list(MODELS))
def run(request, tmp_path_factory):
    return _run_dir(tmp_path_factory, request.param)


def _torch_greedy(model, ids: list[list[int]], n: int) -> list[list[int]]:
    """Full-depth greedy generation with the KV cache (the ONNX graph runs every layer)."""
    out = generate(model, torch.tensor(ids), n, temperature=0.0, use_cache=True, exit_threshold=None)
    return out[:, len(ids[0]):].tolist()


def test_onnx_greedy_equals_torch_token_for_token(run):
    p = r1.load(run, runtime="onnx")
    assert isinstance(p, OnnxTextPredictor) and p.runtime == "onnx" and p.family == "lm"
    assert p.path.parent == run / "onnx" and p.path.name.startswith("model-")  # the run's ONNX cache
    model = r1.load_model(run)
    n = 2 * model.block_size  # crosses the window twice: the cache is rebuilt as in torch
    for prompt in PROMPTS:
        ids = p.encode(prompt)
        rec = p.generate(prompt, max_new_tokens=n, temperature=0.0)
        ref = _torch_greedy(model, [ids], n)[0]
        assert rec["text"] == p.tokenizer.decode(ref), prompt
        assert rec["generated_tokens"] == n


@pytest.mark.parametrize("batch", [2, 5])
def test_dynamic_batch_and_past_parity(run, batch):
    p = r1.load(run, runtime="onnx")
    model = r1.load_model(run)
    gen = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, p.tokenizer.vocab_size, (batch, 7), generator=gen)
    got = np.stack(list(p.token_batches(ids.numpy(), 40)), axis=1).tolist()
    assert got == _torch_greedy(model, ids.tolist(), 40)
    # logits of a prompt, then of steps after it, equal torch's step function at every past length
    step = step_module(model)
    past_t, past_o = None, None
    for t in (6, 1, 3, 1):
        x = torch.randint(0, p.tokenizer.vocab_size, (batch, t), generator=gen)
        logits, past_o = p.step(x.numpy(), past_o)
        empty = [torch.zeros(batch, p.lm["kv_heads"], 0, p.lm["head_size"]) for _ in p.past_names]
        with torch.no_grad():
            ref = step(x, *(past_t or empty))
        past_t = list(ref[1:])
        assert logits.shape == (batch, t, p.tokenizer.vocab_size)
        np.testing.assert_allclose(logits, ref[0].numpy(), atol=1e-4)


def test_int8_loads_and_generates(run):
    p = r1.load(run, runtime="onnx-int8")
    assert p.runtime == "onnx-int8" and p.path.name.endswith("-int8.onnx") and p.path.parent == run / "onnx"
    assert p.quant["kind"] == "int8"
    assert json.loads(read_onnx_meta(p.path)["r1.quant"])["per_channel"] in (True, False)
    rec = p.generate("to be or not", max_new_tokens=40, temperature=0.0)
    assert rec["generated_tokens"] == 40
    again = r1.load(run, runtime="onnx-int8")  # cached: the same file, not quantized again
    assert again.path == p.path and again.generate("to be or not", 40, temperature=0.0)["text"] == rec["text"]
    sampled = p.generate("abc", 10, temperature=1.0, top_k=5, seed=3)
    assert sampled == p.generate("abc", 10, temperature=1.0, top_k=5, seed=3)


def test_bad_runtimes_one_line_errors(tmp_path_factory):
    run = _run_dir(tmp_path_factory, "gpt")
    with pytest.raises(ConfigError, match=r"'onnx-fp64' is not allowed; allowed: torch, onnx, onnx-int8, tensorrt"):
        r1.load(run, runtime="onnx-fp64")
    with pytest.raises(ConfigError, match="family 'lm' runs with torch, onnx, onnx-int8 only"):
        r1.load(run, runtime="tensorrt")
    with pytest.raises(ConfigError, match="family 'cls' runs with torch, onnx, tensorrt only"):
        check_runtime("cls", "onnx-int8")  # dynamic int8 is a language-model runtime
    res = run_cli("generate", str(run), "--runtime", "onnx-fp16", "--max-new-tokens", "3")
    assert res.returncode == 2 and "'onnx-fp16' is not allowed" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_export_and_generate_onnx(tmp_path_factory):
    run = _run_dir(tmp_path_factory, "r1_lm-gqa")
    out = run / "exported.onnx"
    res = run_cli("export", str(run), "--out", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["max_abs_diff"] <= 1e-4 and report["layers"] == 3 and report["kv_heads"] == 1
    res = run_cli("export", str(run), "--out", str(run / "q.onnx"), "--int8")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["int8"]["quantized_matmuls"] > 0
    assert r1.load(run / "q.onnx").quant["kind"] == "int8"  # an int8 file runs with --runtime onnx
    res = {rt: run_cli("generate", str(run), "--prompt", "to be", "--max-new-tokens", "20", "--temperature", "0",
                       "--runtime", rt) for rt in ("onnx", "onnx-int8")}
    text = {rt: r.stdout for rt, r in res.items()}
    assert all(t.startswith("to be") and len(t) > 6 for t in text.values())  # the prompt echoed, then the text
    assert all(re.search(r"^20 tokens in [\d.]+ s: [\d.]+ tokens/s \(onnx(-int8)?, KV cache, 1 thread\)$",
                         r.stderr, re.M) for r in res.values())
    assert not any("Warning" in r.stderr or "WARNING" in r.stderr for r in res.values())  # no library notes
    model = r1.load_model(run)
    p = r1.load(out)
    r = p.predict(["to be"], max_new_tokens=3)[0]
    assert type(r).__name__ == "GenerationResult" and r.text == r["text"] and r.finish_reason == "length"
    ref = _torch_greedy(model, [p.encode("to be")], 20)[0]
    assert text["onnx"].rstrip("\n") == ("to be" + p.tokenizer.decode(ref)).rstrip("\n")


def test_export_of_other_families_refuses_int8(tmp_path):
    with pytest.raises(ConfigError, match=r"export option\(s\) \['int8'\] not allowed for family 'cls'"):
        export_onnx(_tiny_cls(), tmp_path / "m.onnx", options={"int8": True})


def _tiny_cls():
    from r1.registry import list_models
    model = build_model(list_models(family="cls")[0], flavor="tiny", num_classes=3).eval()
    model.r1_meta, model.r1_family = {"preprocess": {"size": [32, 32]}}, "cls"
    return model


def test_serve_onnx_runtime(tmp_path_factory):
    import httpx

    from r1.bench.load import wait_ready
    from r1.serve import ServeConfig, create_app
    from tests.serve.helpers import running_server

    run = _run_dir(tmp_path_factory, "r1_lm")
    local = r1.load(run, runtime="onnx").generate("to be or not", 12, temperature=0.0)
    cfg = ServeConfig(model=str(run), runtime="onnx", max_new_tokens=40, max_text_chars=200, warmup_runs=1)
    with running_server(create_app(cfg)) as (base, _):
        wait_ready(base, timeout=90)
        r = httpx.post(base + "/v1/predict", json={"text": "to be or not", "max_new_tokens": 12, "temperature": 0.0},
                       timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["runtime"] == "onnx" and r.json()["result"]["text"] == local["text"]


def test_triton_repository_reads_the_kv_graph(tmp_path_factory):
    run = _run_dir(tmp_path_factory, "gpt")
    res = run_cli("export", str(run), "--format", "triton", "--out", str(run / "triton"))
    assert res.returncode == 0, res.stderr
    inputs = json.loads(res.stdout)["inputs"]
    assert inputs["idx"] == ["TYPE_INT64", [-1]] and inputs["past_0_k"] == ["TYPE_FP32", [2, -1, 16]]
