"""COCO metrics through pycocotools: perfect predictions give AP 1, class mapping, results JSON."""
import json

import torch
import torch.nn as nn

from r1.config import load_config
from r1.data import build_data
from r1.evaluate import evaluate
from r1.models.det.evaluate import coco_metrics, write_coco_results
from r1.models.det.predict_io import draw_detections

GTS = [{"boxes": torch.tensor([[10.0, 10, 50, 60], [70, 20, 90, 40]]), "labels": torch.tensor([0, 2])},
       {"boxes": torch.tensor([[5.0, 5, 200, 150]]), "labels": torch.tensor([1])},
       {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
SIZES = [(100, 120), (200, 240), (50, 50)]


def as_preds(gts):
    return [{**g, "scores": torch.ones(len(g["labels"]))} for g in gts]


def test_ground_truth_as_predictions_gives_ap_one():
    m = coco_metrics(GTS, as_preds(GTS), [1, 2, 3], SIZES, ["a", "b", "c"])
    for k in ("mAP", "mAP50", "mAP75", "AP/a", "AP/b", "AP/c"):
        assert abs(m[k] - 1.0) < 1e-9, k
    # areas are w * h: 400 (small) and 29,250 (large)
    assert abs(m["mAP_small"] - 1) < 1e-9 and abs(m["mAP_large"] - 1) < 1e-9


def test_wrong_class_and_shifted_boxes_score_lower():
    wrong = as_preds(GTS)
    wrong[0] = {**wrong[0], "labels": torch.tensor([1, 2])}  # first box gets class b
    m = coco_metrics(GTS, wrong, [1, 2, 3], SIZES, ["a", "b", "c"], cat_ids=[3, 7, 9])
    assert m["AP/a"] == 0.0 and abs(m["AP/c"] - 1) < 1e-9 and 0 < m["mAP"] < 1
    shifted = [{**p, "boxes": p["boxes"] + 2} for p in as_preds(GTS)]  # every IoU >= 0.68
    m = coco_metrics(GTS, shifted, [1, 2, 3], SIZES, ["a", "b", "c"])
    assert abs(m["mAP50"] - 1) < 1e-9 and m["mAP"] < 0.99
    assert coco_metrics(GTS, [], [], SIZES, ["a", "b", "c"])["mAP"] == 0.0


def test_unmeasurable_metrics_are_none_not_zero():
    """Digit scenes hold no large object: mAP_large cannot be measured (None, null in metrics.json), while a
    measured miss is 0; a class without an object in the split has no AP either."""
    small = [{"boxes": torch.tensor([[10.0, 10, 30, 30]]), "labels": torch.tensor([0])}]  # area 400: small
    m = coco_metrics(small, as_preds(small), [1], [(64, 64)], ["a", "b"])
    assert abs(m["mAP_small"] - 1) < 1e-9 and m["mAP_medium"] is None and m["mAP_large"] is None
    assert abs(m["AP/a"] - 1) < 1e-9 and m["AP/b"] is None
    m = coco_metrics(small, [], [1], [(64, 64)], ["a", "b"])  # no detection at all
    assert m["mAP"] == 0.0 and m["mAP_small"] == 0.0 and m["AR100"] == 0.0 and m["AP/a"] == 0.0
    assert m["mAP_large"] is None and m["AP/b"] is None


class Oracle(nn.Module):
    """Returns the loader's own targets (network-input pixels) as detections, batch by batch."""

    def __init__(self, batches):
        super().__init__()
        self.queue = [t for _, ts in batches for t in ts]

    def forward(self, images):
        out, self.queue = self.queue[:len(images)], self.queue[len(images):]
        return [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))} for t in out]


def test_evaluator_on_resized_data_gives_ap_one(tmp_path):
    cfg = load_config(None, ["data.name=det_digits", "data.num_train=2", "data.num_val=12", "data.num_test=2",
                             "data.size=96"])  # 128 -> 96: predictions must be mapped back by the evaluator
    b = build_data(cfg.data, 0)
    batches = [b.collate([b.val[i] for i in range(j, j + 4)]) for j in range(0, 12, 4)]
    m = evaluate("det", Oracle(batches), batches, b.meta, torch.device("cpu"), out_dir=tmp_path)
    assert abs(m["mAP"] - 1.0) < 1e-9 and abs(m["mAP50"] - 1.0) < 1e-9
    results = json.loads((tmp_path / "detections.json").read_text())
    n_boxes = sum(len(t["labels"]) for _, ts in batches for t in ts)
    assert len(results) == n_boxes and {r["category_id"] for r in results} <= set(range(1, 11))
    assert min(r["image_id"] for r in results) >= 1


def test_results_json_maps_category_ids_back(tmp_path):
    path = write_coco_results(as_preds(GTS[:1]), [42], {"num_classes": 3, "category_ids": [3, 7, 9]},
                              tmp_path / "r.json")
    res = json.loads(path.read_text())
    assert [r["category_id"] for r in res] == [3, 9] and res[0]["bbox"] == [10.0, 10.0, 40.0, 50.0]
    assert res[0]["image_id"] == 42


def test_draw_detections_writes_png(tmp_path):
    """A small image is drawn enlarged by a whole factor (100 px -> 6x = 600 px), boxes scaled with it."""
    from PIL import Image
    img = torch.zeros(3, 100, 120, dtype=torch.uint8)
    path = draw_detections(img, as_preds(GTS)[0], ["a", "b", "c"], tmp_path / "out.png")
    drawn = torch.from_numpy(__import__("numpy").array(Image.open(path))).permute(2, 0, 1)
    assert drawn.shape == (3, 600, 720) and drawn.sum() > 0 and drawn[:, 480:, :360].sum() == 0
    assert drawn[:, 60:360, 60].sum() > 0  # the first box's left edge (x 10 -> 60), from y 10 to 60 -> 60 to 360
    big = torch.zeros(3, 600, 800, dtype=torch.uint8)  # large enough: drawn as it is
    path = draw_detections(big, as_preds(GTS)[0], ["a", "b", "c"], tmp_path / "big.png")
    assert Image.open(path).size == (800, 600)


def test_predict_files_maps_boxes_to_original_pixels(tmp_path):
    from PIL import Image

    from r1.errors import DataError
    from r1.models.det.predict_io import predict_files

    Image.fromarray(__import__("numpy").zeros((100, 200, 3), "uint8")).save(tmp_path / "a.png")

    class Fixed(nn.Module):  # one box at the same place in network-input pixels
        def forward(self, x):
            return [{"boxes": torch.tensor([[8.0, 8, 32, 16]]), "scores": torch.ones(1),
                     "labels": torch.zeros(1, dtype=torch.int64)} for _ in x]

    meta = {"preprocess": {"size": [64, 64], "mean": [0.5] * 3, "std": [0.5] * 3, "letterbox": True}}
    [(img, pred)] = predict_files(Fixed(), [tmp_path / "a.png"], meta)
    assert img.shape == (3, 100, 200) and torch.allclose(pred["boxes"], torch.tensor([[25.0, 25, 100, 50]]))
    (tmp_path / "b.png").write_bytes(b"garbage")
    import pytest
    with pytest.raises(DataError, match="b.png"):
        predict_files(Fixed(), [tmp_path / "b.png"], meta)


def test_predict_hooks_records_in_original_pixels_and_drawing(tmp_path):
    from PIL import Image

    from r1.family import get_family
    from r1.models.det.predict_io import predict_draw, predict_preprocess, predict_records

    assert get_family("det").io.postprocess is predict_records
    im = Image.fromarray(__import__("numpy").zeros((100, 200, 3), "uint8"))
    meta = {"classes": ["a", "b"],
            "preprocess": {"size": [64, 64], "mean": [0.5] * 3, "std": [0.5] * 3, "letterbox": True}}
    assert predict_preprocess([im, im], meta).shape == (2, 3, 64, 64)
    out = [{"boxes": torch.tensor([[8.0, 8, 32, 16]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    [rec] = predict_records(out, meta, {"images": [im]})
    assert rec == {"boxes": [[25.0, 25.0, 100.0, 50.0]], "scores": [0.9], "class_ids": [1], "labels": ["b"]}
    predict_draw(im, rec, meta, tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").size == (1200, 600)  # 100 px high: drawn at 6x
