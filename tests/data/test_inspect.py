"""`r1 data inspect`: every planted problem is found; real datasets (digits, BCCD, tinyshakespeare)
give the numbers they should; --strict turns findings into exit code 6."""
from __future__ import annotations

import json
import os
import time

import pytest

from tests.conftest import ROOT, run_cli
from tests.data.conftest import BCCD, SHAKESPEARE, write_imagefolder


def _inspect(target, out, *extra):
    res = run_cli("data", "inspect", str(target), "--out", str(out), *extra)
    report = json.loads((out / "data_report.json").read_text()) if (out / "data_report.json").is_file() else None
    return res, report


def _finding(report, check):
    return next((f for f in report["findings"] if f["check"] == check), None)


def test_planted_imagefolder_every_problem_found(planted, tmp_path):
    res, report = _inspect(planted["root"], tmp_path / "rep")
    assert res.returncode == 0, res.stderr
    corrupt = _finding(report, "corrupt")
    assert corrupt and len(corrupt["examples"]) == 1 and str(planted["corrupt"]) in corrupt["examples"][0]
    assert _finding(report, "empty_class")["examples"] == ["empty"]
    imbalance = _finding(report, "imbalance")
    assert imbalance and report["stats"]["imbalance_ratio"] == 7.5  # training split: cat 30, dog 4
    leaks = _finding(report, "cross_split_duplicates")["examples"]
    assert len(leaks) == 2
    for (a, b), kind in ((planted["exact"], "exact"), (planted["near"], "near")):
        assert any(str(a) in x and str(b) in x and f"({kind})" in x for x in leaks), leaks
    assert not _finding(report, "duplicates")  # no pair inside one split
    assert report["stats"]["readable"] == report["stats"]["images"] - 1
    assert report["stats"]["image_size"]["distinct_sizes"] == 2  # 32x32 and the 40x40 re-encoded leak
    md = (tmp_path / "rep" / "data_report.md").read_text()
    assert "cross_split_duplicates" in md and "![hist_width_px.png]" in md
    assert (tmp_path / "rep" / "hist_aspect_ratio_w_h.png").stat().st_size > 1000
    assert "findings: 4" in res.stdout and "[corrupt]" in res.stdout


def test_strict_exit_code(planted, tmp_path):
    assert _inspect(planted["root"], tmp_path / "a", "--strict")[0].returncode == 6
    clean = tmp_path / "clean"
    write_imagefolder(clean, {"train": {"a": 6, "b": 5}, "val": {"a": 2, "b": 2}})
    res, report = _inspect(clean, tmp_path / "b", "--strict")
    assert res.returncode == 0 and report["findings"] == []
    assert report["stats"]["per_split"]["val"]["images"] == 4


def test_digits_from_config(tmp_path):
    res, report = _inspect(ROOT / "configs/cls/digits.yaml", tmp_path / "rep")
    assert res.returncode == 0, res.stderr
    s = report["stats"]
    assert s["images"] == 1797 and s["classes"] == [str(i) for i in range(10)]
    assert {k: v["images"] for k, v in s["per_split"].items()} == {"train": 1257, "val": 270, "test": 270}
    assert s["imbalance_ratio"] < 1.2 and not _finding(report, "imbalance") and s["corrupt"] == 0
    # the 8x8 digits hold near-identical copies (checked: every pair found has one label); the shipped
    # config groups them (data.group_duplicates), so none crosses a split: the split training uses
    assert s["duplicates"]["near"] > 100 and s["duplicates"]["cross_split"] == 0
    assert not _finding(report, "cross_split_duplicates")
    from r1.config import load_config
    from r1.models.cls.data import digits_split

    parts = digits_split(load_config(ROOT / "configs/cls/digits.yaml").data)
    assert [len(p) for p in parts] == [1257, 270, 270]
    plain = tmp_path / "plain.yaml"  # the former split: the leak this option closes
    plain.write_text(f"_base_: {ROOT / 'configs/cls/digits.yaml'}\ndata:\n  group_duplicates: false\n")
    res, report = _inspect(plain, tmp_path / "rep2")
    assert res.returncode == 0 and report["stats"]["duplicates"]["cross_split"] == 54


@pytest.mark.skipif(not BCCD.is_dir(), reason="BCCD not present")
def test_bccd_under_30_seconds(tmp_path):
    t0 = time.perf_counter()
    res, report = _inspect(BCCD, tmp_path / "rep")
    seconds = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr
    s = report["stats"]
    assert report["kind"] == "voc" and s["images"] == 364 and s["classes"] == ["Platelets", "RBC", "WBC"]
    assert s["boxes"]["boxes"] == 4888 and sum(s["boxes"]["sizes_coco"].values()) == 4888
    assert s["boxes"]["degenerate"] == 2 and _finding(report, "degenerate_boxes")
    assert s["imbalance_ratio"] == pytest.approx(2382 / 209, abs=0.01) and _finding(report, "imbalance")
    assert s["image_size"]["distinct_sizes"] == 1 and s["image_size"]["channels"] == {"3": 364}
    assert seconds < 30, f"inspect took {seconds:.1f} s"


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason="tinyshakespeare not present")
def test_tinyshakespeare(tmp_path):
    res, report = _inspect(SHAKESPEARE, tmp_path / "rep")
    assert res.returncode == 0, res.stderr
    s = report["stats"]
    assert s["chars"] == 1115394 and s["vocab_chars"] == 65 and s["bytes_nonprintable_share"] == 0
    assert s["document_unit"] == "paragraph" and s["word_head"][0][0] == "the"
    assert 4.0 < s["entropy_bits_per_char"] < 5.0
    assert not _finding(report, "not_text")


def test_random_bytes_corpus_is_flagged(tmp_path):
    path = tmp_path / "noise.txt"
    path.write_bytes(os.urandom(20000))
    res, report = _inspect(path, tmp_path / "rep", "--strict")
    assert res.returncode == 6
    assert _finding(report, "not_text") and report["stats"]["bytes_nonprintable_share"] > 0.3


def test_text_duplicates_found(tmp_path):
    paras = [f"paragraph number {i} says something quite different about item {i * 7}: " + " ".join(
        f"word{(i * 31 + k * 7) % 97}" for k in range(40)) for i in range(30)]
    paras += [paras[3], paras[5].replace("says", "said")]
    (tmp_path / "c.txt").write_text("\n\n".join(paras))
    _, report = _inspect(tmp_path / "c.txt", tmp_path / "rep")
    assert report["stats"]["duplicates"]["exact"] == 1 and report["stats"]["duplicates"]["near"] == 1
    assert report["stats"]["documents"] == 32


def test_bad_input_is_one_line_error(tmp_path):
    res = run_cli("data", "inspect", str(tmp_path / "nope"))
    assert res.returncode == 3 and "no such file or directory" in res.stderr
    res = run_cli("data", "inspect", str(ROOT / "configs/cls/digits.yaml"), "--unit", "word")
    assert res.returncode == 2 and "--unit: 'word' is not allowed; allowed: auto, paragraph, line" in res.stderr


def test_config_of_a_generated_dataset_is_refused():
    res = run_cli("data", "inspect", str(ROOT / "configs/det/digits.yaml"))
    assert res.returncode == 3 and "data.name='det_digits' is not a kind `r1 data` reads; allowed: digits" in res.stderr
