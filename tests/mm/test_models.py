"""Every registered mm model through the registry: train-mode named losses, eval-mode answer logits,
backward, padding invariance; R1-MM's options (no deformable layer, dense FFN, plain sum, shared
cross-attention, alignment weighting) build and train."""
from __future__ import annotations

import pytest
import torch

from r1.config import ModelConfig, from_dict
from r1.errors import ConfigError
from r1.registry import build_model, get_entry, list_models

MM_MODELS = list_models(family="mm")
VOCAB, LEN, ANSWERS = 30, 12, 10


def batch(n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB - 1, (n, LEN), generator=g)
    mask = torch.ones(n, LEN, dtype=torch.bool)
    mask[0, 7:] = False
    tokens[~mask] = VOCAB - 1
    inputs = {"images": torch.randn(n, 3, 75, 75, generator=g), "tokens": tokens, "mask": mask}
    return inputs, {"answer": torch.randint(0, ANSWERS, (n,), generator=g), "qtype": torch.zeros(n, dtype=torch.long)}


def build(name: str, **fields):
    return build_model(name, flavor="tiny", num_classes=ANSWERS, vocab_size=VOCAB, max_len=LEN, **fields)


def test_the_three_models_are_registered():
    assert {"r1_mm", "mm_cnn_mlp", "mm_cnn_rn"} <= set(MM_MODELS)


@pytest.mark.parametrize("name", MM_MODELS)
def test_losses_logits_backward(name):
    torch.manual_seed(0)
    model = build(name).train()
    inputs, targets = batch()
    losses = model(inputs, targets)
    assert "answer" in losses and all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    assert sum(g is not None for g in grads.values()) >= 0.8 * len(grads)  # experts left unrouted may have none
    model.eval()
    with torch.no_grad():
        logits = model(inputs)
        assert logits.shape == (4, ANSWERS) and torch.isfinite(logits).all()
        # padding does not change an answer: the first question again, without its padded tail
        short = {"images": inputs["images"][:1], "tokens": inputs["tokens"][:1, :7], "mask": inputs["mask"][:1, :7]}
        torch.testing.assert_close(model(short), logits[:1], rtol=1e-4, atol=1e-4)
    assert get_entry(name).doc


@pytest.mark.parametrize("fields", [{"deform_layers": 0}, {"ffn": "dense"}, {"fusion": "sum"}, {"coords": False}, {"film": True},
                                    {"share_cross": True, "align_weighting": True, "align_weight": 0.0}])
def test_r1_mm_options(fields):
    model = build("r1_mm", **fields).train()
    losses = model(*batch())
    sum(losses.values()).backward()
    if fields.get("ffn") == "dense":
        assert "balance" not in losses
    if "align_weight" in fields:
        assert "align" not in losses
    if fields.get("share_cross"):
        assert model.cross[0].t2i is model.cross[1].t2i
        assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in build("r1_mm").parameters())
    if fields.get("film"):
        assert model.film is not None and float(model.film.weight.grad.abs().sum()) > 0
    if "coords" in fields:
        assert model.image.body[0][0].in_channels == 3  # no coordinate channels
    if fields.get("deform_layers") == 0:
        assert not any("DeformConv2d" in type(m).__name__ for m in model.modules())


def test_r1_mm_has_a_deformable_layer_by_default():
    model = build("r1_mm")
    assert sum(type(m).__name__ == "DeformConv2d" for m in model.modules()) == 1


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.deform_layers"):
        from_dict(ModelConfig, {"name": "r1_mm", "late_blocks": 1, "deform_layers": 2}, "model")
    with pytest.raises(ConfigError, match="model.top_k"):
        from_dict(ModelConfig, {"name": "r1_mm", "experts": 2, "top_k": 3}, "model")
    with pytest.raises(ConfigError, match="model.num_classes"):
        build_model("r1_mm", flavor="tiny")
    with pytest.raises(ConfigError, match="inputs"):
        build("mm_cnn_rn")(torch.randn(1, 3, 75, 75))


def test_parameter_count_without_data():
    """`r1 models` counts parameters on the meta device with only num_classes set."""
    from r1.model_table import count_params
    assert all(count_params(name, "tiny") > 0 for name in MM_MODELS)


@pytest.mark.parametrize("name", MM_MODELS)
def test_grouped_batch_equals_repeated_images(name):
    """k questions about one image (a grouped training batch) answer as if each came with its own copy."""
    torch.manual_seed(0)
    model = build(name).eval()
    inputs, _ = batch()
    two = {"images": inputs["images"][:2], "tokens": inputs["tokens"], "mask": inputs["mask"]}  # 2 per image
    repeated = {**two, "images": inputs["images"][:2].repeat_interleave(2, 0)}
    with torch.no_grad():
        torch.testing.assert_close(model(two), model(repeated), rtol=1e-4, atol=1e-5)
        with pytest.raises(ValueError, match="multiple of the images"):
            model({**two, "images": inputs["images"][:3]})
