"""Sort-of-CLEVR generated in code: deterministic by seed, correct answers, the item/collate contract."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from r1.config import DataConfig, from_dict
from r1.data import build_data
from r1.errors import ConfigError
from r1.models.mm import data as soc
from tests.conftest import ROOT


def small(**fields):
    base = {"name": "sort_of_clevr", "train_images": 40, "val_images": 10, "test_images": 10}
    return from_dict(DataConfig, {**base, **fields}, "data")


def test_deterministic_by_seed_and_splits_differ():
    a, b = build_data(small(), 0), build_data(small(), 5)  # run.seed does not change the data
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.train.answer, b.train.answer)
    soc._CACHE.clear()  # generate afresh: same seed, same bytes
    c = build_data(small(), 0)
    assert torch.equal(a.train.images, c.train.images) and torch.equal(a.test.qidx, c.test.qidx)
    other = build_data(small(seed=1), 0)
    assert not torch.equal(a.train.images, other.train.images)
    assert not torch.equal(a.train.images[:10], a.val.images)  # splits are independent draws
    assert len(a.train) == 40 * 20 and len(a.test) == 10 * 20


def test_hand_made_scene_answers():
    # red square at (10, 10), green circle at (20, 12) (closest to red), blue square at (70, 70)
    # (furthest from red); orange/gray/yellow circles spread on the right half.
    centres = np.array([[[10, 10], [20, 12], [70, 70], [60, 10], [50, 40], [65, 35]]], np.float32)
    shapes = np.array([[0, 1, 0, 1, 1, 1]])
    red, green, blue = 0, 1, 2
    asks = [(0, red), (0, green), (1, red), (1, blue), (2, red), (2, blue), (3, red), (4, red), (5, red), (5, green),
            (3, blue)]
    qtype = np.array([[t for t, _ in asks]])
    colour = np.array([[c for _, c in asks]])
    got = [soc.ANSWERS[i] for i in soc.answer_questions(centres, shapes, qtype, colour, 75)[0]]
    assert got == ["square", "circle", "yes", "no", "yes", "no", "circle", "square", "2", "4",
                   "circle"]  # closest to blue (70, 70): yellow (65, 35) vs gray (50, 40) -> yellow circle


def test_render_places_colours_and_shapes():
    centres = np.array([[[10.5, 10.5], [30.5, 10.5], [50.5, 10.5], [10.5, 50.5], [30.5, 50.5], [50.5, 50.5]]],
                       np.float32)
    shapes = np.array([[0, 1, 0, 1, 0, 1]])
    img = soc.render(centres, shapes, 75, 4.0)[0]  # (3, H, W)
    for k, (x, y) in enumerate(centres[0].astype(int)):
        assert tuple(img[:, y, x]) == tuple(soc.RGB[k])
    # a square fills its corner, a circle does not
    assert tuple(img[:, 7, 7]) == tuple(soc.RGB[0]) and tuple(img[:, 7, 27]) == (255, 255, 255)


def test_generated_scenes_do_not_overlap():
    d = soc.generate_split(200, 75, 4, 3, 0)
    c = d["centres"]
    dist = np.linalg.norm(c[:, :, None] - c[:, None], axis=-1) + np.eye(6) * 100
    assert dist.min() >= 2 * 4 + 1  # objects (side 8) never touch
    assert c.min() >= 4 and c.max() <= 71
    rel = np.isin(d["qtype"], soc.RELATIONAL)
    assert rel.sum(1).tolist() == [10] * 200  # 10 relational + 10 non-relational per image


def test_items_collate_and_meta():
    bundle = build_data(small(questions="relational"), 0)
    (image, tokens, mask), (answer, qtype) = bundle.train[0]
    assert image.shape == (3, 75, 75) and image.dtype == torch.float32
    assert tokens.shape == mask.shape and int(qtype) in soc.RELATIONAL
    inputs, targets = bundle.collate([bundle.train[i] for i in range(8)])
    assert set(inputs) == {"images", "tokens", "mask"} and set(targets) == {"answer", "qtype"}
    assert inputs["tokens"].shape[1] == int(inputs["mask"].sum(1).max())  # padding cut to the batch
    meta = bundle.meta
    assert meta["answers"] == soc.ANSWERS and meta["num_classes"] == 10 and meta["max_len"] >= tokens.shape[0]
    assert meta["preprocess"]["size"] == [75, 75] and meta["tokenizer"]["type"] == "char"
    from r1.models.lm.tokenizer import load_tokenizer
    tok = load_tokenizer(meta)
    q = soc.all_questions()[int(bundle.train.qidx[0])]
    assert tok.decode(tokens[mask].tolist()) == q
    assert set(torch.unique(bundle.train.qtype).tolist()) <= set(soc.RELATIONAL)


def test_bpe_tokens_are_shorter():
    char, bpe = build_data(small(), 0).meta, build_data(small(tokenizer="bpe"), 0).meta
    assert bpe["tokenizer"]["type"] == "bpe" and bpe["max_len"] < char["max_len"] / 2


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="data.questions"):
        small(questions="some")
    with pytest.raises(ConfigError, match="data.img_size"):
        small(img_size=8)


def test_build_data_finds_a_family_data_kind_on_first_use():
    """build_data imports the family folders when it meets a kind not under r1/data/."""
    code = ("import r1.models, r1.data; from r1.config import DataConfig, from_dict; "
            "cfg = from_dict(DataConfig, {'name': 'sort_of_clevr', 'train_images': 2, 'val_images': 1, "
            "'test_images': 1}, 'data'); assert not r1.models._loaded; "
            "b = r1.data.build_data(cfg); print(b.family, len(b.train))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["mm", "40"]


def test_grouped_items_share_one_image():
    ungrouped, grouped = build_data(small(), 0), build_data(small(group=10), 0)
    assert len(grouped.train) == 40 * 2 and len(grouped.test) == 10 * 20  # evaluation stays one per item
    (image, tokens, mask), (answer, qtype) = grouped.train[3]
    assert tokens.shape[0] == mask.shape[0] == answer.shape[0] == qtype.shape[0] == 10
    rows = grouped.train.rows[3]
    assert len(set(ungrouped.train.image_of[rows].tolist())) == 1  # the same image for the 10 questions
    assert torch.equal(image, ungrouped.train[int(rows[0])][0][0])
    # ordered by type: an image's first chunk holds its 10 non-relational questions, the second its relational
    assert set(grouped.train[0][1][1].tolist()) <= {0, 1, 2} and set(grouped.train[1][1][1].tolist()) <= {3, 4, 5}
    assert grouped.train.difficulty[0] == 0 and grouped.train.difficulty[1] == 2
    inputs, targets = grouped.collate([grouped.train[0], grouped.train[1]])
    assert inputs["images"].shape[0] == 2 and inputs["tokens"].shape[0] == 20 and targets["answer"].shape == (20,)
    # every question is asked once over the grouped split, with the same answers
    assert sorted(grouped.train.rows.view(-1).tolist()) == list(range(800))
    with pytest.raises(ConfigError, match="data.group"):
        build_data(small(group=3), 0)
