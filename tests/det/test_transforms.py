"""Detection transforms keep boxes consistent with the pixels."""
import torch
from torchvision.transforms import v2

from r1.models.det.transforms import DetDataConfig, FixedResize, build_transforms, make_sample, preprocess, unscale

BOXES = torch.tensor([[10.0, 20.0, 60.0, 50.0], [100.0, 5.0, 190.0, 95.0], [0.0, 0.0, 200.0, 100.0]])


def sample(h=100, w=200):
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    return make_sample(image, BOXES, [0, 1, 2])


def test_flip_twice_is_identity():
    flip = v2.RandomHorizontalFlip(p=1.0)
    img, tgt = sample()
    once_img, once = flip(img, tgt)
    assert torch.equal(once["boxes"][0], torch.tensor([200 - 60.0, 20, 200 - 10, 50]))
    twice_img, twice = flip(once_img, once)
    assert torch.equal(twice["boxes"], tgt["boxes"]) and torch.equal(twice_img, img)


def test_letterbox_scales_boxes_exactly_and_unscales():
    img, tgt = sample()
    out_img, out = FixedResize(64, letterbox=True)(img, tgt)
    assert out_img.shape == (3, 64, 64)
    assert torch.allclose(out["scale"], torch.tensor([0.32, 0.32]))
    assert torch.allclose(out["boxes"], BOXES * 0.32, atol=1e-5)
    assert torch.allclose(unscale(out["boxes"].as_subclass(torch.Tensor), out["scale"]), BOXES, atol=1e-4)
    assert (out_img[:, 32:, :] == 0).all()  # padding below the 64x32 resized image


def test_stretch_resize_scales_each_axis():
    img, tgt = sample()
    _, out = FixedResize(64, letterbox=False)(img, tgt)
    expected = BOXES * torch.tensor([64 / 200, 64 / 100, 64 / 200, 64 / 100])
    assert torch.allclose(out["boxes"], expected, atol=1e-5)


def test_train_pipeline_output_is_consistent():
    cfg = DetDataConfig(size=96, iou_crop=True, zoom_out=2.0, scale_range=[0.5, 1.5])
    tf = build_transforms(cfg, train=True)
    for seed in range(30):
        torch.manual_seed(seed)
        img, tgt = sample()
        tgt["boxes"][0] = torch.tensor([50.0, 50.0, 50.0, 70.0])  # degenerate: must be dropped
        x, out = tf(img, tgt)
        assert x.shape == (3, 96, 96) and x.dtype == torch.float32 and torch.isfinite(x).all()
        b = out["boxes"]
        assert type(b) is torch.Tensor and b.shape[1] == 4 and len(b) == len(out["labels"])
        assert (b[:, 2] - b[:, 0] >= 1).all() and (b[:, 3] - b[:, 1] >= 1).all()
        assert (b >= 0).all() and (b <= 96).all()
        assert 0 not in out["labels"].tolist()


def test_training_augmentation_is_reproducible_from_the_global_seed():
    tf = build_transforms(DetDataConfig(size=96), train=True)
    torch.manual_seed(1)
    img, tgt = sample()
    torch.manual_seed(7)
    a = tf(img, tgt)
    torch.manual_seed(7)
    b = tf(img, tgt)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])


def test_preprocess_for_inference_matches_eval_transform():
    image = torch.randint(0, 256, (3, 100, 200), dtype=torch.uint8)
    pre = {"size": [64, 64], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "letterbox": True}
    x, scale = preprocess(image, pre)
    assert x.shape == (3, 64, 64) and torch.allclose(scale, torch.tensor([0.32, 0.32]))
