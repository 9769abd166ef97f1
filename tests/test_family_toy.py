"""The family spec contract: a family registered entirely from this test module (model, data kind,
spec) goes through train -> export -> predict -> serve -> pipeline report with nothing of it under
r1/; and generic modules never name a family (checked by grep)."""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from PIL import Image
from torch.utils.data import Dataset

from tests.conftest import ROOT

COLOURS = ["red", "green", "blue"]
SIZE = 12


# ----------------------------------------------------------------------------- the toy family
class Pairs(Dataset):
    """(x[i], y[i]) items of two tensors set by a subclass."""

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class ColourImages(Pairs):
    """Noisy images whose class is the channel that is brightest on average."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        x = torch.rand(n, 3, SIZE, SIZE, generator=g) * 0.6
        x[torch.arange(n), self.y] += 0.4
        self.x = (x - 0.5) / 0.25


def _register():
    from r1.config import DataConfig, ModelConfig, opt, variant
    from r1.data import DataBundle, register_data
    from r1.family import ExportHook, FamilyIO, FamilySpec, register_family
    from r1.inference.images import image_batch, resize_normalize
    from r1.registry import _MODELS, register_model

    if "toy_colour_net" in _MODELS:
        return

    @variant(ModelConfig, "toy_colour_net", flavors={"tiny": {"width": 4}, "small": {"width": 8}})
    @dataclass
    class ToyNetConfig(ModelConfig):
        width: int = opt(4, "Channels of the conv layer.", min=1)

    @dataclass
    class ToyDataConfig(DataConfig):
        samples: int = opt(96, "Training images.", min=8)

    class ToyNet(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.conv = nn.Conv2d(3, cfg.width, 3, padding=1)
            self.fc = nn.Linear(cfg.width, cfg.num_classes)

        def forward(self, images, labels=None):
            scores = self.fc(F.relu(self.conv(images)).mean((2, 3)))
            return scores if labels is None else {"ce": F.cross_entropy(scores, labels)}

    register_model("toy_colour_net", family="toy", config=ToyNetConfig)(lambda cfg: ToyNet(cfg))

    @register_data("toy_colours", ToyDataConfig)
    def toy_colours(cfg, seed):
        meta = {"classes": COLOURS, "num_classes": 3,
                "preprocess": {"size": [SIZE, SIZE], "mean": [0.5] * 3, "std": [0.25] * 3}}
        return DataBundle(ColourImages(cfg.samples, 1), ColourImages(48, 2), ColourImages(48, 3), "toy", meta)

    def evaluate(model, loader, meta, device, out_dir=None):
        hits = n = 0
        for x, y in loader:
            hits += int((model(x.to(device)).argmax(1).cpu() == y).sum())
            n += len(y)
        return {"hit_rate": hits / n}

    def records(scores, meta, options):
        p = torch.as_tensor(np.asarray(scores)).softmax(-1)
        return [{"colour": COLOURS[int(row.argmax())], "confidence": round(float(row.max()), 5)} for row in p]

    def draw(image, record, meta, path, **options):
        image.save(path)

    register_family(FamilySpec(
        name="toy", summary="dominant colour of an image", evaluate=evaluate, monitor="hit_rate", mode="max",
        io=FamilyIO(resize_normalize, records, draw), export=ExportHook(output_names=lambda options: ["scores"]),
        example_inputs=image_batch))


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    from r1.config import load_config
    from r1.train import fit

    _register()
    root = tmp_path_factory.mktemp("toy")
    cfg = root / "toy.yaml"
    cfg.write_text(yaml.safe_dump({
        "run": {"name": "toy", "dir": str(root / "run"), "threads": 1},
        "model": {"name": "toy_colour_net", "flavor": "tiny"},
        "data": {"name": "toy_colours", "batch_size": 16},
        "optim": {"lr": 0.05}, "train": {"max_steps": 30, "eval_every": 15, "log_every": 10}}))
    metrics = fit(load_config(cfg, []))
    return root, cfg, metrics


def _images():
    rng = np.random.default_rng(0)
    out = []
    for c in range(3):
        arr = (rng.random((SIZE, SIZE, 3)) * 150).astype(np.uint8)
        arr[..., c] = 250
        out.append(Image.fromarray(arr))
    return out


def test_toy_family_trains_exports_predicts_serves_and_reports(toy_run):
    import r1
    from r1.onnx.export import export_onnx
    from r1.pipeline import run_pipeline
    from r1.serve import ServeConfig, create_app
    from tests.serve.helpers import running_server

    root, cfg, metrics = toy_run
    run = root / "run"
    assert metrics["test/hit_rate"] >= 0.9  # the family's own evaluator and monitor
    assert json.loads((run / "model.json").read_text())["family"] == "toy"

    # export, then one Predictor over torch and onnxruntime with the family's records
    onnx = run / "toy.onnx"
    assert export_onnx(run, onnx)["outputs"] == ["scores"]
    images = _images()
    by_torch = r1.load(run).predict(images)
    by_onnx = r1.load(onnx).predict(images)
    assert [r["colour"] for r in by_torch] == COLOURS == [r["colour"] for r in by_onnx]
    assert by_torch[0].to_json().keys() == {"colour", "confidence"}
    assert by_torch[1].save(root / "drawn.png").is_file()

    # serve: the family's record comes back over HTTP
    buf = io.BytesIO()
    images[2].save(buf, format="PNG")
    app = create_app(ServeConfig(model=str(run), inference="thread", warmup_runs=1))
    with running_server(app) as (url, _):
        for _ in range(200):
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
            __import__("time").sleep(0.05)
        r = httpx.post(f"{url}/v1/predict", files={"file": ("a.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["family"] == "toy" and r.json()["result"]["colour"] == "blue"

    # a pipeline: train, export and a measured report row per stage
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "toy", "dir": str(root / "pipe"), "stages": [
        {"name": "net", "kind": "train", "config": str(cfg), "overrides": ["train.max_steps=10"]},
        {"name": "net_onnx", "kind": "export", "source": "net"},
        {"name": "report", "kind": "bench", "rows": ["net", "net_onnx"], "runs": 20, "throughput_batch": 4,
         "threads": 1}]}))
    run_pipeline(recipe)
    rows = json.loads((root / "pipe" / "report.json").read_text())["rows"]
    assert [r["metric_name"] for r in rows] == ["test/hit_rate"] * 2
    assert rows[0]["metric"] == pytest.approx(rows[1]["metric"])


GENERIC = ["r1/train", "r1/export", "r1/serve", "r1/pipeline", "r1/bench", "r1/predict.py", "r1/artifacts.py",
           "r1/evaluate", "r1/compress", "r1/registry.py", "r1/family.py", "r1/data", "r1/inference", "r1/onnx",
           "r1/input_kinds", "r1/tune", "r1/config", "r1/config_commands.py", "r1/robust", "r1/layers",
           "r1/model_table.py", "r1/cli", "r1/command_spec.py", "r1/command_sections.py"]
FAMILY_NAMES = re.compile(r"""["'](cls|det|lm|mm)["']|r1\.models\.(?!load_all|light_configs|family_commands)\w""")


def test_generic_modules_name_no_family():
    """Quoted family names, imports of a family's package (r1.models.<family>) in generic modules."""
    hits = []
    for entry in GENERIC:
        for path in sorted((ROOT / entry).rglob("*.py")) if (ROOT / entry).is_dir() else [ROOT / entry]:
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if FAMILY_NAMES.search(line.split("#")[0]):
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


# ----------------------------------------------------------------------------- a new input kind
# A family whose model takes a fixed-length float vector: its input kind, predictor and family are
# registered here, and it is served over HTTP, predicted from files and benchmarked with nothing of
# it under r1/serve, r1/export, r1/bench or r1/predict*.
DIM = 6


@dataclass(frozen=True)
class VectorTask:
    values: tuple
    id: int = 0


def _vector_kind():
    from r1.errors import DataError
    from r1.input_kinds import InputKind
    from r1.input_kinds.base import checked, error
    from r1.input_kinds.http import ApiError, json_object

    class VectorKind(InputKind):
        name = "vector"
        needs = ("predictor",)

        def openapi_content(self):
            return {"application/json": {"schema": {"title": "VectorRequest", "type": "object",
                                                    "properties": {"vector": {"type": "array"}}}}}

        async def read_request(self, request, ctx):
            body = await json_object(request, '{"vector": [0.1, ...]}')
            values = body.get("vector")
            if not isinstance(values, list) or len(values) != DIM or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise ApiError(422, "invalid_request", f"vector: expected {DIM} numbers")
            return VectorTask(tuple(float(v) for v in values), next(ctx.next_id))

        def sample_request(self):
            return json.dumps({"vector": [0.5] * DIM}).encode(), "application/json"

        def run_batch(self, predictor, tasks, cfg, cancelled=(), emit=None):
            good = [i for i, t in enumerate(tasks) if isinstance(t, VectorTask)]
            records = predictor.predict([tasks[i].values for i in good])
            out = [error(422, "invalid_request", "this model takes vectors")] * len(tasks)
            for i, rec in zip(good, records):
                out[i] = checked(rec.to_json())
            return out

        def read_files(self, model, paths, options):
            try:
                return [tuple(np.loadtxt(p, dtype=np.float32).reshape(DIM).tolist()) for p in paths]
            except (OSError, ValueError) as err:
                raise DataError(f"{model}: cannot read a vector of {DIM} numbers ({err})") from None

    return VectorKind()


class VectorPredictor:
    family, inputs, runtime = "toyvec", "vector", "torch"

    def __init__(self, model):
        self.model, self.meta, self.load_seconds, self.max_batch = model, model.r1_meta, 0.0, None

    @classmethod
    def load(cls, path, runtime=None, threads=1):
        from r1.artifacts import load_model

        return cls(load_model(path))

    def run(self, batch):
        with torch.inference_mode():
            return self.model(torch.as_tensor(np.asarray(batch, np.float32))).numpy()

    def predict(self, inputs, top_k=3, batch_size=32, **options):
        from r1.inference import Result

        scores = self.run(np.asarray(inputs, np.float32)) if inputs else np.zeros((0, 2))
        return [Result({"sign": "positive" if row.argmax() else "negative", "score": round(float(row.max()), 5)})
                for row in torch.as_tensor(scores).softmax(-1).numpy()]

    def warmup(self, runs=1, batch_sizes=(1,)):
        for b in batch_sizes:
            self.run(np.zeros((b, DIM), np.float32))


class SignDataset(Pairs):
    """Vectors whose class is the sign of their sum."""

    def __init__(self, n: int, seed: int):
        self.x = torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed))
        self.y = (self.x.sum(1) > 0).long()


def _register_vector_family():
    from r1.config import DataConfig, ModelConfig, opt, variant
    from r1.data import DataBundle, register_data
    from r1.family import FamilySpec, register_family
    from r1.input_kinds import register_input_kind
    from r1.registry import _MODELS, register_model

    if "toy_sign_net" in _MODELS:
        return
    register_input_kind(_vector_kind())

    @variant(ModelConfig, "toy_sign_net", flavors={"tiny": {}, "small": {}})
    @dataclass
    class SignNetConfig(ModelConfig):
        pass

    @dataclass
    class SignDataConfig(DataConfig):
        samples: int = opt(256, "Training vectors.", min=8)

    class SignNet(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.fc = nn.Linear(DIM, 2)

        def forward(self, x, labels=None):
            return self.fc(x) if labels is None else {"ce": F.cross_entropy(self.fc(x), labels)}

    register_model("toy_sign_net", family="toyvec", config=SignNetConfig)(lambda cfg: SignNet(cfg))

    @register_data("toy_signs", SignDataConfig)
    def toy_signs(cfg, seed):
        meta = {"classes": ["negative", "positive"], "num_classes": 2, "dim": DIM}
        return DataBundle(SignDataset(cfg.samples, 1), SignDataset(64, 2), SignDataset(64, 3), "toyvec", meta)

    def evaluate(model, loader, meta, device, out_dir=None):
        hits = n = 0
        for x, y in loader:
            hits += int((model(x).argmax(1) == y).sum())
            n += len(y)
        return {"hit_rate": hits / n}

    register_family(FamilySpec(
        name="toyvec", summary="the sign of a vector's sum", evaluate=evaluate, monitor="hit_rate", mode="max",
        inputs="vector", predictor=VectorPredictor.load, runtimes=("torch",),
        example_inputs=lambda meta, n, g: torch.randn(n, DIM, generator=g)))


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory):
    from r1.config import load_config
    from r1.train import fit

    _register_vector_family()
    root = tmp_path_factory.mktemp("toyvec")
    cfg = root / "toyvec.yaml"
    cfg.write_text(yaml.safe_dump({
        "run": {"name": "toyvec", "dir": str(root / "run"), "threads": 1},
        "model": {"name": "toy_sign_net", "flavor": "tiny"}, "data": {"name": "toy_signs", "batch_size": 32},
        "optim": {"lr": 0.1}, "train": {"max_steps": 40, "eval_every": 0, "log_every": 20}}))
    metrics = fit(load_config(cfg, []))
    return root, metrics


def test_a_new_input_kind_is_served_predicted_from_files_and_benchmarked(vector_run):
    import r1
    from r1.bench.cli import run_bench
    from r1.bench.load import run_load
    from r1.predict import predict_files
    from r1.serve import ServeConfig, create_app
    from tests.serve.helpers import running_server

    root, metrics = vector_run
    run = root / "run"
    assert metrics["test/hit_rate"] >= 0.85
    vectors = {"pos": [1.0, 0.5, 0.2, 0.3, 0.1, 0.4], "neg": [-1.0, -0.5, 0.2, -0.3, -0.1, -0.4]}
    local = {k: r1.load(run).predict([v])[0].to_json() for k, v in vectors.items()}
    assert [local["pos"]["sign"], local["neg"]["sign"]] == ["positive", "negative"]

    # r1 predict: files read by the kind
    files = []
    for k, v in vectors.items():
        files.append(root / f"{k}.txt")
        np.savetxt(files[-1], v)
    records = list(predict_files(run, files))
    assert [r["file"] for r in records] == [str(f) for f in files]
    assert [{k: r[k] for k in ("sign", "score")} for r in records] == [local["pos"], local["neg"]]

    # r1 serve: requests read by the kind, batched, answered with the family's record
    app = create_app(ServeConfig(model=str(run), inference="thread", warmup_runs=1))
    with running_server(app) as (url, _):
        for _ in range(200):
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
            __import__("time").sleep(0.05)
        assert httpx.get(f"{url}/readyz").json()["inputs"] == "vector"
        ok = httpx.post(f"{url}/v1/predict", json={"vector": vectors["neg"]})
        bad = httpx.post(f"{url}/v1/predict", json={"vector": [1, 2]})
        load = run_load(url, concurrency=4, duration=5, max_requests=40)  # the kind's sample request
    assert ok.status_code == 200 and ok.json()["result"] == local["neg"] and ok.json()["family"] == "toyvec"
    assert bad.status_code == 422 and "expected 6 numbers" in bad.json()["detail"]
    assert load["ok"] == load["requests"] == 40

    # r1 bench: latency rows from the family's example inputs
    _, rows = run_bench(str(run), None, None, "1,4", 20, 1, "1", 1.0, 10)
    assert [(r["runtime"], r["batch"]) for r in rows] == [("torch", 1), ("torch", 4)] and rows[0]["p50"] > 0
