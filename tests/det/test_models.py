"""Every registered det model: forward/backward on tiny inputs, loss keys, no NaN, predictions format."""
import math

import pytest
import torch

from r1.models.det.flops import count_gflops, count_params
from r1.registry import build_model, list_models

DET_MODELS = list_models(family="det")
LOSS_KEYS = {"r1_det": {"cls", "box"}, "tv_retinanet_mnv3": {"classification", "bbox_regression"},
             "tv_fcos_mnv3": {"classification", "bbox_regression", "bbox_ctrness"},
             "tv_ssdlite320": {"classification", "bbox_regression"}}


def targets():
    return [{"boxes": torch.tensor([[10.0, 20, 60, 70], [30, 30, 90, 100]]), "labels": torch.tensor([0, 2])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]


def test_registry_has_r1_det_and_the_baselines():
    assert set(LOSS_KEYS) <= set(DET_MODELS)


@pytest.mark.parametrize("name", DET_MODELS)
def test_train_and_predict(name):
    model = build_model(name, flavor="tiny", num_classes=3)
    model.train()
    losses = model(torch.randn(2, 3, 128, 128), targets())
    assert set(losses) == LOSS_KEYS.get(name, set(losses))
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)  # DDP needs every one used
    model.eval()
    with torch.no_grad():
        preds = model(torch.randn(2, 3, 128, 96))
    assert len(preds) == 2
    for p in preds:
        n = len(p["scores"])
        assert p["boxes"].shape == (n, 4) and p["labels"].shape == (n,)
        assert n == 0 or (0 <= int(p["labels"].min()) and int(p["labels"].max()) < 3)


@pytest.mark.parametrize("name", DET_MODELS)
def test_losses_finite_without_any_box(name):
    model = build_model(name, flavor="tiny", num_classes=2).train()
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    losses = model(torch.randn(2, 3, 96, 96), empty)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_r1_det_raw_outputs_anchors_and_options():
    for opts in [{}, {"levels": [2, 3, 4, 5]}, {"levels": [3, 4, 5, 6, 7], "assigner": "maxiou",
                                                "box_loss": "smooth_l1", "depthwise": False}]:
        model = build_model("r1_det", flavor="tiny", num_classes=4, **opts)
        x = torch.randn(2, 3, 100, 132)  # not a multiple of the largest stride
        cls, box = model.forward_raw(x)
        anchors, per_level = model.anchors((100, 132))
        assert cls.shape == (2, anchors.shape[0], 4) and box.shape == (2, anchors.shape[0], 4)
        assert len(per_level) == len(model.strides) and sum(per_level) == anchors.shape[0]
        boxes, scores = model.forward_decoded(x)
        assert boxes.shape == box.shape and (0 <= scores).all() and (scores <= 1).all()
        model.train()
        losses = model(x, targets())
        assert all(torch.isfinite(v) for v in losses.values()), opts
        d = model.distill_outputs(x, targets())
        assert d["matched"].shape == (2, anchors.shape[0]) and (d["matched"][1] < 0).all()
        assert (d["matched"][0] >= 0).any()  # both boxes got positives


def test_r1_det_nine_anchors_and_initial_scores_near_prior():
    model = build_model("r1_det", flavor="tiny", num_classes=3).eval()
    assert model.cells.shape[1] == 9
    cls, _ = model.forward_raw(torch.randn(1, 3, 64, 64))
    assert abs(torch.sigmoid(cls).mean().item() - 0.01) < 0.005


@pytest.mark.parametrize("flavor", ["tiny", "small", "base"])
def test_r1_det_flavors_params_and_gflops(flavor):
    model = build_model("r1_det", flavor=flavor, num_classes=3)
    params, gflops = count_params(model), count_gflops(model, 320)
    assert 1e5 < params < 2e7 and 0.05 < gflops < 10
    assert math.isclose(count_gflops(model, 160), gflops / 4, rel_tol=0.1)
    # every pyramid level really has the stride its anchors assume (archs differ in stage strides)
    maps = model.pyramid(torch.zeros(1, 3, 96, 160))
    assert [tuple(m.shape[-2:]) for m in maps] == [(-(-96 // s), -(-160 // s)) for s in model.strides]


@pytest.mark.slow
def test_r1_det_exports_with_dynamic_shapes():
    """torch.export of the NMS-free path (decoded boxes + scores), checked on another input shape."""
    model = build_model("r1_det", flavor="tiny", num_classes=3).eval()

    class Decoded(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.forward_decoded(x)

    dims = {"x": {0: torch.export.Dim("B", min=1, max=16), 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}}
    ep = torch.export.export(Decoded(model), (torch.randn(2, 3, 128, 128),), dynamic_shapes=dims)
    x = torch.randn(3, 3, 96, 160)
    for a, b in zip(ep.module()(x), model.forward_decoded(x)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_r1_det_prunes_expansion_channels_and_rebuilds_from_config():
    from r1.compress.prune import count_params, prune_l1
    from r1.registry import build_model as build

    model = build("r1_det", flavor="tiny", num_classes=3).eval()
    pruned = prune_l1(model, 0.3).eval()
    assert count_params(pruned) < 0.9 * count_params(model)
    assert pruned.r1_config.exp_channels and build(pruned.r1_config).load_state_dict(pruned.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        cls_a, box_a = model.forward_raw(x)
        cls_b, box_b = pruned.forward_raw(x)
    assert cls_a.shape == cls_b.shape and box_a.shape == box_b.shape


def test_flavors_are_different_models():
    """Each flavor of a model is its own size: `r1 models` once listed SSDlite320 small and base at one count."""
    from r1.model_table import count_params
    from r1.registry import get_entry

    for name in list_models():
        presets = [repr(sorted(p.items())) for p in get_entry(name).flavors.values()]
        assert len(set(presets)) == len(presets), name
    counts = [count_params("tv_ssdlite320", f) for f in ("tiny", "small", "base")]
    assert counts[0] < counts[1] < counts[2], counts
