"""The lm evaluator and the BLEU / ROUGE helpers."""
import math

import pytest
import torch

from r1.evaluate import evaluate
from r1.models.lm.evaluate import bleu, rouge
from r1.models.lm.tokenizer import CharTokenizer
from r1.registry import build_model


def test_bleu_rouge_known_values():
    refs = ["the cat sat on the mat", "a quick brown fox"]
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert rouge(refs, refs)["rougeL"] == pytest.approx(1.0)
    assert bleu(["dogs run fast", "zzz"], refs) < 5.0
    r = rouge(["the cat sat", "a quick brown fox"], refs)
    assert 0.5 < r["rouge1"] < 1.0 and r["rouge2"] < r["rouge1"]


def test_evaluator_loss_ppl_bpc_and_exit_metrics():
    m = build_model("r1_lm", flavor="tiny", num_classes=20)
    x = torch.randint(0, 20, (6, 16))
    y = x.roll(-1, 1)
    y[:, :3] = -100
    loader = [(x[:3], y[:3]), (x[3:], y[3:])]
    out = evaluate("lm", m, loader, {"chars_per_token": 2.0}, torch.device("cpu"))
    with torch.no_grad():
        ref = torch.nn.functional.cross_entropy(m(x).flatten(0, 1), y.flatten(), ignore_index=-100).item()
    assert out["loss"] == pytest.approx(ref, rel=1e-5)
    assert out["ppl"] == pytest.approx(math.exp(ref), rel=1e-5)
    assert out["bpc"] == pytest.approx(ref / math.log(2) / 2.0, rel=1e-5)
    assert out["tokens"] == 6 * 13
    assert 1 <= out["exit_layers"] <= m.n_layer and "exit_loss" in out


def test_evaluator_generates_answers_for_instruction_data():
    tok = CharTokenizer("abcdefgh :\n", ["<|endoftext|>"])
    m = build_model("gpt", flavor="tiny", num_classes=tok.vocab_size)
    from r1.models.lm.data_instruct import encode_pair
    items = [encode_pair(tok, "q:{instruction}\na:", "abc", "defg", 16) for _ in range(2)]
    x, y = (torch.stack(t) for t in zip(*items))
    meta = {"task": "instruct", "tokenizer": tok.to_dict(), "eos_id": tok.token_to_id("<|endoftext|>")}
    out = evaluate("lm", m, [(x, y)], meta, torch.device("cpu"))
    assert {"loss", "bleu", "rouge1", "rougeL"} <= set(out)
