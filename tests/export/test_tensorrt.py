"""TensorRT: a clear `Unavailable` (exit 5) without a GPU; the real build where one exists."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from r1.errors import Unavailable
from r1.export.tensorrt import build_engine
from r1.inference.tensorrt import require_tensorrt
from tests.conftest import run_r1


def _have_tensorrt() -> bool:
    try:
        require_tensorrt()
        return True
    except Unavailable:
        return False


@pytest.mark.skipif(_have_tensorrt(), reason="TensorRT is available here; the gpu test covers it")
def test_unavailable_is_clear(tmp_path, trained_digits):
    with pytest.raises(Unavailable, match="NVIDIA GPU|not installed"):
        build_engine(tmp_path / "m.onnx")
    res = run_r1("export", str(trained_digits), "--format", "tensorrt", "--out", str(tmp_path / "m.engine"))
    assert res.returncode == 5
    assert res.stderr.strip().startswith("error: TensorRT") and "Traceback" not in res.stderr
    res = run_r1("serve", str(trained_digits), "--runtime", "tensorrt")
    assert res.returncode == 5 and "TensorRT" in res.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not _have_tensorrt(), reason="needs an NVIDIA GPU and the tensorrt package")
def test_engine_matches_onnxruntime(trained_digits, tmp_path):
    from r1.inference.predictor import Predictor
    from r1.onnx.export import export_onnx

    onnx_path = tmp_path / "m.onnx"
    export_onnx(trained_digits, onnx_path)
    report = build_engine(onnx_path, tmp_path / "m.engine", fp16=False, min_batch=1, opt_batch=4, max_batch=8)
    assert report["profile"][2][0] == 8
    trt_p, ort_p = Predictor.load(report["path"], runtime="tensorrt"), Predictor.load(onnx_path)
    x = torch.randn(5, *ort_p.input_shape).numpy()
    np.testing.assert_allclose(trt_p.run(x), ort_p.run(x), atol=1e-3)
    fp16 = build_engine(onnx_path, tmp_path / "h.engine", fp16=True, max_batch=8)
    np.testing.assert_allclose(Predictor.load(fp16["path"]).run(x), ort_p.run(x), atol=5e-2)
