"""Detector export with dynamic height and width (`r1 export --dynamic-hw`): raw-output parity with
torch at sizes other than the trace's, the recorded range and TensorRT profile, the stride rule,
and predictions of non-square images letterboxed to the stride equal torch's."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from r1.artifacts import load_model, save_artifact
from r1.errors import ConfigError
from r1.inference.predictor import Predictor
from r1.onnx.dynamic_hw import SizeRange, resolve_range, verify_size
from r1.onnx.export import export_onnx
from r1.onnx.graph import ort_session, read_onnx_meta
from r1.registry import build_model
from tests.conftest import run_cli

META = {"classes": ["a", "b", "c"], "num_classes": 3,
        "preprocess": {"size": [160, 160], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                       "letterbox": True}}
RANGE = {"min_size": 64, "opt_size": 0, "max_size": 384}


@pytest.fixture(scope="module")
def dyn(tmp_path_factory):
    """A tiny R1-Det run dir exported with --dynamic-hw through `r1 export --format tensorrt`'s path,
    TensorRT itself stubbed: (run dir, ONNX path, export report, TensorRT build arguments)."""
    from r1.export import tensorrt
    from r1.export.cli import run_export
    from r1.inference import tensorrt as trt_runtime

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("dethw") / "det"
    model = build_model("r1_det", flavor="tiny", num_classes=3, score_thresh=0.3).eval()
    with torch.no_grad():  # the prior bias (p = 0.01) leaves nothing above the threshold
        model.head.cls_out.bias.fill_(0.0)
    save_artifact(model, run, META)
    built = {}

    def fake_build(onnx_path, out, **kw):
        built.update(kw, onnx=str(onnx_path), profile=tensorrt.profile_shapes(
            read_onnx_meta(onnx_path), kw["min_batch"], kw["opt_batch"], kw["max_batch"]))
        return {"path": str(out)}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trt_runtime, "require_tensorrt", lambda: None)
        mp.setattr(tensorrt, "build_engine", fake_build)
        run_export(run, "tensorrt", out=run / "model.engine", max_batch=32, hw=RANGE)
    return run, run / "model.onnx", built


def test_raw_parity_at_two_other_sizes(dyn):
    from r1.models.det.export import _DetRaw

    run, onnx_path, _ = dyn
    net = _DetRaw(load_model(run).eval(), level_shapes=True).eval()
    session = ort_session(onnx_path)
    for h, w in [(256, 320), (384, 224)]:
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            ref = [t.numpy() for t in net(x)]
        got = session.run(None, {"images": x.numpy()})
        assert [g.shape for g in got] == [r.shape for r in ref]
        assert ref[0].shape[1] == 9 * sum(-(-h // s) * -(-w // s) for s in (8, 16, 32))
        np.testing.assert_array_equal(got[2], [[h / s, w / s] for s in (8, 16, 32)])
        for r, g in zip(ref[:2], got[:2]):
            assert float(np.abs(r.astype(np.float64) - g).max()) <= 1e-4


def test_meta_records_range_and_tensorrt_profile(dyn):
    _, onnx_path, built = dyn
    props = read_onnx_meta(onnx_path)
    assert json.loads(props["r1.dynamic_hw"]) == {"stride": 32, "min": 64, "opt": 160, "max": 384}
    assert json.loads(props["r1.input"])["shape"] == [-1, 3, -1, -1]
    pre = json.loads(props["r1.meta"])["preprocess"]
    assert pre["stride"] == 32 and pre["min_size"] == 64 and pre["size"] == [160, 160]
    assert json.loads(props["r1.det"])["dynamic_hw"] is True
    assert built["onnx"] == str(onnx_path)
    assert built["profile"] == ((1, 3, 64, 64), (8, 3, 160, 160), (32, 3, 384, 384))


def test_non_square_predictions_equal_torch(dyn):
    run, onnx_path, _ = dyn
    onnx_p = Predictor.load(onnx_path)
    torch_p = Predictor.load(run)
    torch_p.meta = onnx_p.meta  # the same letterbox-to-stride rule, run by the torch model
    rng = np.random.default_rng(0)
    wide = Image.fromarray(rng.integers(0, 256, (90, 200, 3), dtype=np.uint8))
    tall = Image.fromarray(rng.integers(0, 256, (150, 60, 3), dtype=np.uint8))
    assert onnx_p.preprocess([wide]).shape == (1, 3, 96, 160)  # 72 x 160 -> padded to 96 x 160
    assert onnx_p.preprocess([tall]).shape == (1, 3, 160, 64)
    assert onnx_p.preprocess([wide, tall]).shape == (2, 3, 160, 160)  # a batch: its largest H, W
    for images in ([wide], [tall], [wide, tall]):
        a, b = torch_p.predict(images), onnx_p.predict(images)
        assert sum(len(r["boxes"]) for r in b) > 0
        for ra, rb, im in zip(a, b, images):
            assert ra["class_ids"] == rb["class_ids"]
            np.testing.assert_allclose(ra["boxes"], rb["boxes"], atol=0.05)
            np.testing.assert_allclose(ra["scores"], rb["scores"], atol=1e-3)
            boxes = np.asarray(rb["boxes"]).reshape(-1, 4)
            assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= im.width).all() and (boxes[:, [1, 3]] <= im.height).all()


def test_serve_batch_with_a_bad_image(dyn):
    """The server's fallback when one image of a batch cannot be preprocessed: the others, of
    different sizes, still run as one batch padded to their largest H, W."""
    from r1.config_commands import ServeConfig
    from r1.input_kinds.image import ImageKind, ImageTask

    _, onnx_path, _ = dyn
    p = Predictor.load(onnx_path)
    good = p.preprocess

    def preprocess(images):
        if any(im.width == 7 for im in images):
            raise ValueError("bad image")
        return good(images)

    p.preprocess = preprocess
    rng = np.random.default_rng(1)
    pixels = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(90, 200, 3), (7, 7, 3), (150, 60, 3)]]
    out = ImageKind().run_batch(p, [ImageTask(top_k=1, pixels=px) for px in pixels], ServeConfig(max_pixels=10 ** 7))
    assert [r[0] for r in out] == ["ok", "error", "ok"]
    alone = p.predict([Image.fromarray(pixels[0]), Image.fromarray(pixels[2])])
    np.testing.assert_allclose(out[2][1]["boxes"], alone[1]["boxes"], atol=0.05)


def test_bad_min_size_is_one_line(dyn, tmp_path):
    run, _, _ = dyn
    res = run_cli("export", str(run), "--dynamic-hw", "--min-size", "100", "--out", str(tmp_path / "m.onnx"))
    assert res.returncode == ConfigError.exit_code
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--min-size: 100 is not allowed" in lines[0] and "multiples of the model's stride 32" \
        in lines[0]
    res = run_cli("export", str(run), "--min-size", "64", "--out", str(tmp_path / "m.onnx"))
    assert res.returncode == ConfigError.exit_code and "only with export.dynamic_hw=true" in res.stderr
    res = run_cli("export", str(run), "--dynamic-hw", "--format", "triton", "--out", str(tmp_path / "t"))
    assert res.returncode == ConfigError.exit_code and "not available for --format triton" in res.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_torchvision_baseline_is_a_clear_error(tmp_path):
    model = build_model("tv_ssdlite320", flavor="tiny", num_classes=3).eval()
    with pytest.raises(ConfigError, match="--dynamic-hw: model 'tv_ssdlite320' has no dynamic-HW export.*r1_det"):
        export_onnx(model, tmp_path / "m.onnx", meta=META, family="det", dynamic_hw={})
    assert not (tmp_path / "m.onnx").exists()


def test_family_without_dynamic_hw_is_a_clear_error(tmp_path):
    model = build_model("mlp", flavor="tiny", num_classes=10).eval()
    with pytest.raises(ConfigError, match="^--dynamic-hw: not available for family 'cls'; families that have it: det$"):
        export_onnx(model, tmp_path / "m.onnx", meta=META, family="cls", dynamic_hw={})


def test_size_range_rules():
    assert resolve_range(32, 320) == SizeRange(32, 32, 320, 640)
    assert resolve_range(32, 300) == SizeRange(32, 32, 320, 640)  # opt: the size rounded up to the stride
    assert resolve_range(64, 320, 128, 0, 512) == SizeRange(64, 128, 320, 512)
    with pytest.raises(ConfigError, match=r"^--max-size: 500 is not allowed; allowed: multiples of the model's "
                                          r"stride 32 \(32, 64, 96, \.\.\.\)$"):
        resolve_range(32, 320, max_size=500)
    with pytest.raises(ConfigError, match="need min <= opt <= max, got 64, 640, 320"):
        resolve_range(32, 320, 64, 640, 320)
    with pytest.raises(ConfigError, match="a fixed size"):
        resolve_range(32, 320, 320, 320, 320)
    with pytest.raises(ConfigError, match="multiples of 32 from 64 to 384"):
        SizeRange(32, 64, 160, 384).check(96, 100)
    h, w = verify_size(SizeRange(32, 64, 160, 384))
    assert (h, w) == (160, 96)
    assert verify_size(SizeRange(32, 32, 32, 64)) == (32, 64)


def test_stride_preprocess_and_fixed_size_unchanged():
    from r1.models.det.transforms import preprocess, stride_shape

    image = torch.randint(0, 256, (3, 50, 120), dtype=torch.uint8)
    fixed = META["preprocess"]
    x, scale = preprocess(image, fixed)
    assert x.shape == (3, 160, 160)
    dyn = {**fixed, "stride": 32, "min_size": 64}
    assert stride_shape(50, 120, dyn) == (96, 160)  # 67 x 160 -> 96 x 160
    assert stride_shape(10, 300, dyn) == (64, 160)  # the short side at least min_size
    y, scale_y = preprocess(image, dyn)
    assert y.shape == (3, 96, 160) and torch.equal(scale, scale_y)
    torch.testing.assert_close(y, x[:, :96])  # the same pixels, less padding
    z, _ = preprocess(image, dyn, pad_to=(128, 192))
    assert z.shape == (3, 128, 192)
    torch.testing.assert_close(z[:, :96, :160], y)


@pytest.mark.slow  # a second dynamo export (~20 s)
def test_nms_graph_dynamic_hw(tmp_path):
    from r1.models.det.export_nms import match_detections, unpad

    model = build_model("r1_det", flavor="tiny", num_classes=3, score_thresh=0.3).eval()
    with torch.no_grad():
        model.head.cls_out.bias.fill_(0.0)
    report = export_onnx(model, tmp_path / "n.onnx", meta=META, family="det", options={"nms": True},
                         dynamic_hw={"max_size": 384})
    assert report["dynamic_hw"]["max"] == 384
    session = ort_session(tmp_path / "n.onnx")
    from r1.models.det.export_nms import DetWithNMS

    net = DetWithNMS(model).eval()
    for h, w in [(256, 320), (384, 224)]:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            ref = unpad(net(x))
        assert match_detections(ref, unpad(session.run(None, {"images": x.numpy()})), relative_boxes=True) <= 1e-4
