import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def det_run(tmp_path_factory):
    """An untrained tiny R1-Det (3 classes, 64x64 letterboxed): its detections are arbitrary but exact."""
    from r1.artifacts import save_artifact
    from r1.registry import build_model

    torch.manual_seed(0)
    model = build_model("r1_det", flavor="tiny", num_classes=3).eval()
    with torch.no_grad():  # class scores near 0.1 instead of the 0.01 prior: a few detections per image
        model.head.cls_out.bias.fill_(-2.2)
    meta = {"classes": ["a", "b", "c"], "num_classes": 3,
            "preprocess": {"size": [64, 64], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "letterbox": True}}
    out = tmp_path_factory.mktemp("runs") / "det"
    save_artifact(model, out, meta)
    return out


@pytest.fixture(scope="session")
def lm_run(tmp_path_factory):
    """An untrained tiny R1-LM over a character vocabulary."""
    from r1.artifacts import save_artifact
    from r1.models.lm.tokenizer import CharTokenizer
    from r1.registry import build_model

    torch.manual_seed(0)
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz .,\n", specials=["<|endoftext|>"])
    model = build_model("r1_lm", flavor="tiny", num_classes=tok.vocab_size).eval()
    out = tmp_path_factory.mktemp("runs") / "lm"
    save_artifact(model, out, {"task": "lm", "tokenizer": tok.to_dict(), "vocab_size": tok.vocab_size})
    return out


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory):
    """A tiny MLP classifier (8x8 RGB, 3 classes): the quickest model to export to ONNX (~2 s)."""
    from r1.artifacts import save_artifact
    from r1.registry import build_model

    torch.manual_seed(0)
    model = build_model("mlp", flavor="tiny", num_classes=3, in_features=192)
    meta = {"classes": ["a", "b", "c"], "num_classes": 3,
            "preprocess": {"size": [8, 8], "mean": [0.5] * 3, "std": [0.5] * 3}}
    out = tmp_path_factory.mktemp("runs") / "mlp"
    save_artifact(model, out, meta)
    return out
