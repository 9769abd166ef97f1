"""`r1 data clean`: a cleaned copy without the planted problems (source untouched); the perplexity
filter removes planted garbage lines and keeps >= 99% of clean ones."""
from __future__ import annotations

import json

import pytest

from r1.config import load_config
from r1.train import fit
from tests.conftest import ROOT, run_cli
from tests.data.conftest import clean_lines, garbage_lines


def _tree(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())


def test_clean_imagefolder_drops_planted_problems(planted, tmp_path):
    root, out = planted["root"], tmp_path / "cleaned"
    before = _tree(root)
    res = run_cli("data", "clean", str(root), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert _tree(root) == before  # the source is never modified
    report = json.loads((out / "clean_report.json").read_text())
    assert report["dropped_by_reason"] == {"corrupt": 1, "cross-split leak": 2}
    gone = {d["item"] for d in report["dropped_items"]}
    # leaks lose their training copy; the val/test copies stay
    assert gone == {str(planted["corrupt"]), str(planted["exact"][0]), str(planted["near"][0])}
    assert not (out / "train/cat" / planted["exact"][0].name).exists()
    assert (out / "val/cat/leak_exact.png").is_file() and (out / "test/cat/leak_near.jpg").is_file()
    assert not (out / "train/empty").exists()
    res = run_cli("data", "inspect", str(out), "--out", str(tmp_path / "rep"))
    checks = {f["check"] for f in json.loads((tmp_path / "rep/data_report.json").read_text())["findings"]}
    assert checks == {"imbalance"}  # what cleaning cannot fix: balance it when training (data.balance)


def test_clean_refuses_to_write_into_the_source(planted):
    res = run_cli("data", "clean", str(planted["root"]), "--out", str(planted["root"] / "x"))
    assert res.returncode == 2 and "is the source or inside it; choose a new folder outside the source" in res.stderr


@pytest.fixture(scope="module")
def reference_lm(tmp_path_factory):
    """A tiny character LM trained for a few seconds on clean lines (a different sample than the test's)."""
    tmp = tmp_path_factory.mktemp("ref_lm")
    (tmp / "train.txt").write_text("\n".join(clean_lines(2000, seed=5)) + "\n")
    cfg = load_config(ROOT / "configs/lm/shakespeare-char.yaml", [
        f"data.path={tmp / 'train.txt'}", f"data.cache_dir={tmp / 'cache'}", f"run.dir={tmp / 'lm'}",
        "run.threads=1", "model.flavor=tiny", "model.exit_calibrate=0", "data.block_size=32", "data.batch_size=32",
        "train.max_steps=120", "train.eval_every=120", "sched.warmup_steps=10"])
    fit(cfg)
    return tmp / "lm"


def test_perplexity_filter_removes_planted_garbage(reference_lm, tmp_path):
    import random
    good, bad = clean_lines(400, seed=9), garbage_lines(20)
    lines = good + bad
    random.Random(0).shuffle(lines)
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    res = run_cli("data", "clean", str(tmp_path / "corpus.txt"), "--out", str(out), "--unit", "line",
                  "--dedup", "none", "--lm", str(reference_lm), "--max-ppl", "50")
    assert res.returncode == 0, res.stderr
    kept = (out / "corpus.txt").read_text().splitlines()
    assert not set(bad) & set(kept), "a garbage line survived"
    assert sum(line in kept for line in good) >= 0.99 * len(good)
    report = json.loads((out / "clean_report.json").read_text())
    assert report["perplexity"]["dropped"] >= len(bad) and report["docs_out"] == len(kept)
    assert report["perplexity"]["median_kept"] < 20


def test_perplexity_filter_by_share_and_errors(reference_lm, tmp_path):
    (tmp_path / "c.txt").write_text("\n".join(clean_lines(95, seed=3) + garbage_lines(5)) + "\n")
    res = run_cli("data", "clean", str(tmp_path / "c.txt"), "--out", str(tmp_path / "o"), "--unit", "line",
                  "--dedup", "none", "--lm", str(reference_lm), "--drop-share", "0.05")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "o/c.txt").read_text().splitlines() == clean_lines(95, seed=3)
    res = run_cli("data", "clean", str(tmp_path / "c.txt"), "--out", str(tmp_path / "p"), "--max-ppl", "9")
    assert res.returncode == 2 and "need --lm RUN" in res.stderr
    res = run_cli("data", "clean", str(tmp_path / "c.txt"), "--out", str(tmp_path / "q"), "--lm", str(reference_lm))
    assert res.returncode == 2 and "give --max-ppl" in res.stderr


def test_clean_voc_drops_leaked_training_image(tmp_path):
    import shutil

    from r1.data_tools.scan import read_voc
    from tests.data.conftest import write_voc

    voc = write_voc(tmp_path / "voc", [("a", "train", [("x", [1, 1, 9, 9])]), ("b", "train", [("x", [2, 2, 8, 8])]),
                                       ("c", "test", [("x", [3, 3, 30, 30])])])
    shutil.copy(voc / "JPEGImages/c.jpg", voc / "JPEGImages/a.jpg")  # train image a is test image c
    res = run_cli("data", "clean", str(voc), "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    assert "kept 2, dropped 1, cross-split leak 1" in res.stdout
    kept = read_voc(tmp_path / "out")
    assert sorted((r.split, r.path.name) for r in kept.records) == [("test", "c.jpg"), ("train", "b.jpg")]
