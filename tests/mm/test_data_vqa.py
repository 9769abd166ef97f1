"""Real-image mm data kinds: questions generated from VOC / COCO boxes (answers right for known boxes,
the same from either layout, deterministic by data.seed) and user JSONL files (answers vocabulary,
skipped images counted, bad lines named by file:line)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from r1.config import DataConfig, from_dict
from r1.data import build_data
from r1.data.unreadable import UNREADABLE
from r1.errors import DataError
from r1.models.lm.tokenizer import load_tokenizer
from r1.models.mm.data_jsonl import UNKNOWN_ANSWER
from tests.mm.vqa_folders import write_coco, write_voc

CANONICAL = {" are in the image?": " are there?", " in the image?": "?", "which object is the biggest?": "what is the largest object?",
             "which object is the tiniest?": "what is the smallest object?",
             "what is the most common object?": "which class is most frequent?"}
# training split, data.absent_classes=0, data.max_count=3; compare questions take one of their two orientations
EXPECTED = {
    "a": {"how many cat are there?": "2", "how many dog are there?": "1", "is there a cat?": "yes",
          "is there a dog?": "yes", "what is the largest object?": "dog", "what is the smallest object?": "cat",
          "which class is most frequent?": "cat"},
    "b": {"how many big bird are there?": "1", "how many dog are there?": "2", "is there a big bird?": "yes",
          "is there a dog?": "yes", "what is the largest object?": "big bird", "what is the smallest object?": "dog",
          "which class is most frequent?": "dog"},
    "c": {"how many cat are there?": "1", "how many dog are there?": "1", "is there a cat?": "yes",
          "is there a dog?": "yes"},  # equal areas and counts: no largest / smallest / most question
    "d": {},
    "e": {"how many cat are there?": "3+", "how many dog are there?": "1", "is there a cat?": "yes",
          "is there a dog?": "yes", "which class is most frequent?": "cat"},
}
COMPARE = {"a": {"are there more cat than dog?": "yes", "are there more dog than cat?": "no"},
           "b": {"are there more big bird than dog?": "no", "are there more dog than big bird?": "yes"},
           "c": {"are there more cat than dog?": "no", "are there more dog than cat?": "no"},
           "d": {}, "e": {"are there more cat than dog?": "yes", "are there more dog than cat?": "no"}}


def vqa(kind: str, root: Path, **fields):
    return build_data(from_dict(DataConfig, {"name": kind, "root": str(root), "img_size": 32, "absent_classes": 0,
                                             "max_count": 3, **fields}, "data"), 0)


def questions(bundle, split: str = "train") -> list[tuple[str, str, str, str]]:
    """(image stem, question type, question text, answer) per item, decoded through the tokenizer."""
    ds, meta = getattr(bundle, split), bundle.meta
    tok = load_tokenizer(meta)
    return [(Path(ds.paths[int(ds.image_of[i])]).stem, meta["question_types"][int(ds.qtype[i])],
             tok.decode(ds.table[ds.text_of[i]][ds.mask[ds.text_of[i]]].tolist()),
             meta["answers"][int(ds.answer[i])]) for i in range(len(ds))]


def canonical(text: str) -> str:
    for a, b in CANONICAL.items():
        text = text.replace(a, b)
    return text


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    return write_voc(tmp_path_factory.mktemp("voc"))


def test_voc_questions_answer_the_boxes(voc_root):
    got = questions(vqa("vqa_voc", voc_root))
    for image in EXPECTED:
        asked = {canonical(t): (kind, a) for im, kind, t, a in got if im == image}
        plain = {t: a for t, (kind, a) in asked.items() if kind != "compare"}
        assert plain == EXPECTED[image], image
        compare = {t: a for t, (kind, a) in asked.items() if kind == "compare"}
        assert len(compare) == (1 if COMPARE[image] else 0) and compare.items() <= COMPARE[image].items(), image
    kinds = {kind for _, kind, t, _ in got}
    assert kinds == {"count", "exists", "largest", "smallest", "most", "compare"}
    assert all(t.split(" ")[0] in ("how", "is", "what", "which", "are") for _, _, t, _ in got)


def test_coco_layout_asks_the_same_questions(voc_root, tmp_path):
    coco = vqa("vqa_coco", write_coco(tmp_path / "coco"))  # the voc2coco layout: data.root alone
    voc = vqa("vqa_voc", voc_root)
    for split in ("train", "val", "test"):
        assert questions(coco, split) == questions(voc, split)
    assert coco.meta["answers"] == voc.meta["answers"]


def test_vocabulary_meta_items_and_collate(voc_root):
    bundle = vqa("vqa_voc", voc_root)
    meta = bundle.meta
    assert meta["answers"] == ["yes", "no", "big bird", "cat", "dog", "0", "1", "2", "3+"]
    assert meta["question_types"] == ["count", "exists", "largest", "smallest", "most", "compare"]
    assert meta["count_types"] == [0] and meta["relational_types"] == [] and meta["num_classes"] == 9
    assert meta["preprocess"]["size"] == [32, 32] and meta["img_size"] == 32 and meta["object_classes"] == [
        "big_bird", "cat", "dog"]
    assert meta["answers"][meta["majority_answer"]] == "yes"
    (image, tokens, mask), (answer, qtype) = bundle.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and tokens.shape == mask.shape
    inputs, targets = bundle.collate([bundle.train[i] for i in range(5)] + [None])
    assert inputs["images"].shape == (5, 3, 32, 32) and targets["answer"].shape == (5,)
    assert bundle.collate([None, None]) is None
    assert bundle.stats["train_images"] == 5 and bundle.stats["train_questions"] == len(bundle.train)
    # the curriculum's per-item difficulty: exists easiest, counting hardest
    levels = {meta["question_types"][int(q)]: float(d) for q, d in zip(bundle.train.qtype, bundle.train.difficulty)}
    assert levels["exists"] < levels["largest"] < levels["count"]


def test_pixels_are_the_predictors(voc_root):
    """Training images go through the same stretch + normalisation as the mm predictor's inputs."""
    from r1.inference.images import resize_normalize

    bundle = vqa("vqa_voc", voc_root)
    (image, _, _), _ = bundle.train[0]
    path = bundle.train.paths[int(bundle.train.image_of[0])]
    expected = resize_normalize([Image.open(path).convert("RGB")], bundle.meta)[0]
    assert torch.allclose(image, expected, atol=1e-5)


def test_questions_are_fixed_by_data_seed(voc_root):
    a, b = questions(vqa("vqa_voc", voc_root, absent_classes=1)), questions(vqa("vqa_voc", voc_root, absent_classes=1))
    assert a == b
    other = questions(vqa("vqa_voc", voc_root, absent_classes=1, seed=7))
    assert other != a and len(other) == len(a)  # other phrasings, orientations and absent classes


def test_absent_classes_and_questions_per_image(voc_root):
    got = questions(vqa("vqa_voc", voc_root, absent_classes=1))
    empty = {canonical(t): a for im, _, t, a in got if im == "d"}  # no boxes: one absent class asked about
    assert len(empty) == 2 and sorted(empty.values()) == ["0", "no"]
    a = {canonical(t): a for im, _, t, a in got if im == "a"}
    assert a["how many big bird are there?"] == "0" and a["is there a big bird?"] == "no"
    capped = questions(vqa("vqa_voc", voc_root, questions_per_image=2))
    assert all(sum(im == k for im, *_ in capped) <= 2 for k in EXPECTED)


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    root = write_voc(tmp_path / "voc")
    (root / "JPEGImages" / "d.jpg").write_bytes(b"not an image")  # fails at build: skipped, counted
    whole = (root / "JPEGImages" / "a.jpg").read_bytes()
    (root / "JPEGImages" / "a.jpg").write_bytes(whole[:len(whole) // 3])  # header ok, pixels cut: fails in use
    bundle = vqa("vqa_voc", root)
    assert bundle.stats["train_unreadable_images"] == 1 and bundle.stats["train_images"] == 4
    UNREADABLE.reset()
    items = [bundle.train[i] for i in range(len(bundle.train))]
    broken = [Path(bundle.train.paths[int(bundle.train.image_of[i])]).stem for i, it in enumerate(items) if it is None]
    assert set(broken) == {"a"} and len(UNREADABLE.errors) == 1
    assert bundle.collate(items)[0]["images"].shape[0] == sum(it is not None for it in items)


def test_bad_roots_and_names():
    with pytest.raises(DataError, match="data.root"):
        vqa("vqa_voc", Path("/nonexistent/voc"))
    with pytest.raises(DataError, match="annotation file not found"):
        vqa("vqa_coco", Path("/nonexistent/coco"))


def test_evaluator_scores_the_count_bucket():
    from r1.models.mm.metrics import evaluate_vqa

    answers = ["yes", "no", "cat", "0", "1", "2", "3+"]
    meta = {"answers": answers, "question_types": ["count", "exists"], "relational_types": [],
            "count_types": [0], "majority_answer": 0}
    truth = torch.tensor([answers.index(a) for a in ("3+", "1", "0", "yes")])
    preds = torch.tensor([answers.index(a) for a in ("1", "1", "3+", "no")])
    logits = torch.nn.functional.one_hot(preds, len(answers)).float()
    out = evaluate_vqa(lambda x: logits, [({"x": torch.zeros(4)}, {"answer": truth, "qtype": torch.tensor(
        [0, 0, 0, 1])}), None], meta, "cpu")
    assert out["accuracy"] == pytest.approx(1 / 4) and out["accuracy_count"] == pytest.approx(1 / 3)
    assert out["accuracy_exists"] == 0.0 and "accuracy_relational" not in out
    assert out["count_mae"] == pytest.approx((2 + 0 + 3) / 3) and out["count_mse"] == pytest.approx((4 + 0 + 9) / 3)


# ----------------------------------------------------------------------------- mm_jsonl
def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def jsonl_dir(tmp_path):
    (tmp_path / "imgs").mkdir()
    for k, colour in enumerate(["red", "green", "blue", "white"]):
        Image.new("RGB", (40, 30), colour).save(tmp_path / "imgs" / f"{k}.png")
    write_jsonl(tmp_path / "train.jsonl", [
        {"image": "imgs/0.png", "text": "What colour is it?", "answer": "red", "type": "colour"},
        {"image": "imgs/1.png", "text": "what colour is it?", "answer": "green", "type": "colour"},
        "",
        {"image": "imgs/2.png", "text": "Is it blue?", "label": "yes", "type": "yesno"},
        {"image": str(tmp_path / "imgs/3.png"), "text": "which class?", "label": 7},
        {"image": "imgs/missing.png", "text": "what colour is it?", "answer": "red"}])
    write_jsonl(tmp_path / "val.jsonl", [
        {"image": "imgs/0.png", "text": "what colour is it?", "answer": "red", "type": "colour"},
        {"image": "imgs/3.png", "text": "what colour is it?", "answer": "white", "type": "other"}])
    return tmp_path


def jsonl(d: Path, **fields):
    return build_data(from_dict(DataConfig, {"name": "mm_jsonl", "train": str(d / "train.jsonl"),
                                             "val": str(d / "val.jsonl"), "img_size": 32, **fields}, "data"), 0)


def test_jsonl_answers_types_and_skipped_images(jsonl_dir):
    bundle = jsonl(jsonl_dir)
    meta = bundle.meta
    assert meta["answers"] == ["7", "green", "red", "yes"] and meta["question_types"] == ["colour", "yesno"]
    assert bundle.stats["skipped_images"] == 1 and len(bundle.train) == 4 and bundle.test is None
    assert bundle.train.answer.tolist() == [2, 1, 3, 0] and bundle.train.qtype.tolist() == [0, 0, 1, -1]
    # val: an answer training never gives stays, scored wrong; an unseen type is no type
    assert bundle.val.answer.tolist() == [2, UNKNOWN_ANSWER] and bundle.val.qtype.tolist() == [0, -1]
    (image, tokens, mask), _ = bundle.train[0]
    assert image.shape == (3, 32, 32) and load_tokenizer(meta).decode(tokens[mask].tolist()) == "what colour is it?"
    assert meta["preprocess"]["size"] == [32, 32] and meta["count_types"] == []
    cut = jsonl(jsonl_dir, max_len=5)
    assert cut.train.table.shape[1] == 5 and cut.meta["max_len"] == 5


@pytest.mark.parametrize("line, message", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "a JSON list, not an object"),
    ('{"image": "imgs/0.png", "text": "q"}', "'answer'/'label' must be a non-empty string or an integer \\(missing"),
    ('{"image": "imgs/0.png", "text": "q", "answer": true}', "'answer'/'label' must be"),
    ('{"image": "imgs/0.png", "answer": "x"}', "'text' must be a non-empty string \\(missing"),
    ('{"image": 3, "text": "q", "answer": "x"}', "'image' must be a non-empty string"),
    ('{"image": "imgs/0.png", "text": "q", "answer": "x", "label": "y"}', "both 'answer' and 'label'"),
    ('{"image": "imgs/0.png", "text": "q", "answer": "x", "caption": "y"}', "unknown key\\(s\\) \\['caption'\\]"),
    ('{"image": "imgs/0.png", "text": "q", "answer": "x", "type": 4}', "'type' must be a non-empty string"),
])
def test_jsonl_bad_line_names_file_and_line(jsonl_dir, line, message):
    good = json.dumps({"image": "imgs/0.png", "text": "q", "answer": "x"})
    write_jsonl(jsonl_dir / "train.jsonl", [good, line])
    with pytest.raises(DataError, match=f"train.jsonl:2: {message}.*expected one JSON object per line") as err:
        jsonl(jsonl_dir)
    assert "\n" not in str(err.value)


def test_jsonl_missing_files_and_no_readable_image(jsonl_dir):
    with pytest.raises(DataError, match="data.val: required"):
        build_data(from_dict(DataConfig, {"name": "mm_jsonl", "train": str(jsonl_dir / "train.jsonl")}, "data"), 0)
    with pytest.raises(DataError, match="data.test: JSONL file not found"):
        jsonl(jsonl_dir, test=str(jsonl_dir / "nope.jsonl"))
    write_jsonl(jsonl_dir / "val.jsonl", [{"image": "imgs/none.png", "text": "q", "answer": "red"}])
    with pytest.raises(DataError, match="val.jsonl: no example with a readable image \\(1 unreadable"):
        jsonl(jsonl_dir)
