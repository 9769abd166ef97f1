"""Issue 17 item 10: usage errors, damaged artifacts, crafted pickles, decompression bombs, unwritable run
dirs and damaged pipeline records end as one-line errors with a documented exit code, never a traceback."""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import struct
import zlib

import pytest
import torch
from PIL import Image

from tests.conftest import ROOT, run_cli, tiny_cls_overrides

DIGITS = str(ROOT / "configs/cls/digits.yaml")


def _one_line(proc, code: int, start: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(start), proc.stderr


# ----------------------------------------------------------------------------- usage (typer/click)
@pytest.mark.parametrize("args, message", [
    (["nosuchcommand"], "Error: No such command 'nosuchcommand'."),
    (["train", DIGITS, "--bogus"], "Error: No such option: --bogus"),
    (["predict"], "Error: Missing argument 'model'."),
    (["predict", "run", "x.png", "--top-k", "-1"], "Error: Invalid value for '--top-k'"),
    (["generate", "run", "--top-k", "-1"], "Error: Invalid value for '--top-k'"),
])
def test_usage_errors_exit_2_without_traceback(args, message):
    _one_line(run_cli(*args), 2, message)


# ----------------------------------------------------------------------------- damaged artifacts
@pytest.fixture()
def copy_run(trained_digits, tmp_path):
    def make(name="m"):
        dst = tmp_path / name
        shutil.copytree(trained_digits, dst, ignore=shutil.ignore_patterns(".r1-run", "onnx"))
        return dst
    return make


@pytest.fixture()
def png(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (16, 16)).save(path)
    return path


def _edit_info(run, change):
    info = json.loads((run / "model.json").read_text())
    change(info)
    (run / "model.json").write_text(json.dumps(info))


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "model.json").write_text("{bad"), "model.json: not valid JSON (Expecting property name"),
    (lambda r: (r / "model.json").write_text("[1, 2]"), "model.json: expected a JSON object, got list"),
    (lambda r: _edit_info(r, lambda i: i.pop("family")), "model.json: key 'family' missing or not a string"),
    (lambda r: _edit_info(r, lambda i: i.pop("meta")), "model.json: key 'meta' missing or not an object"),
    (lambda r: _edit_info(r, lambda i: i.update(family="det")),
     "model.json: family 'det' does not match model r1_mobilenetv3, a cls-family model"),
    (lambda r: _edit_info(r, lambda i: i["meta"]["preprocess"].update(size=[0, 0])),
     "model.json: meta.preprocess.size must be two positive integers [height, width], got [0, 0]"),
    (lambda r: (r / "model.safetensors").write_bytes((r / "model.safetensors").read_bytes()[:1000]),
     "model.safetensors: unreadable safetensors file"),
    (lambda r: (r / "model.safetensors").write_bytes(os.urandom(4096)),
     "model.safetensors: unreadable safetensors file"),
])
def test_damaged_model_files_are_exit_3(copy_run, png, damage, message):
    run = copy_run()
    damage(run)
    _one_line(run_cli("predict", str(run), str(png)), 3, f"error: {run / message.split(':')[0]}:{message.split(':', 1)[1]}")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo owned > /dev/null",))


def test_crafted_pickle_as_init_from_or_last_pt_is_refused(copy_run, tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Evil()}, evil)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"model": _Evil()}, protocol=2))
    for path in (evil, legacy):
        proc = run_cli("train", DIGITS, *tiny_cls_overrides(tmp_path / f"run_{path.stem}"),
                       f"train.init_from={path}", "--no-progress")
        _one_line(proc, 3, f"error: {path}: refused: not a plain tensor checkpoint, loading it would run pickled code")
    run = copy_run()
    shutil.copy(evil, run / "checkpoints" / "last.pt")
    proc = run_cli("train", DIGITS, *tiny_cls_overrides(run), "--resume", "--no-progress")
    _one_line(proc, 3, f"error: {run / 'checkpoints' / 'last.pt'}: refused: not a plain tensor checkpoint")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(b"PK\x03\x04garbage")
    proc = run_cli("train", DIGITS, *tiny_cls_overrides(tmp_path / "run_t"), f"train.init_from={truncated}",
                   "--no-progress")
    _one_line(proc, 3, f"error: {truncated}: unreadable checkpoint")


# ----------------------------------------------------------------------------- inputs and places
def _png_header_only(path, width, height) -> None:
    """A PNG whose header claims width x height pixels: PIL's decompression-bomb check fires on open."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_predict_on_a_decompression_bomb_is_exit_3(trained_digits, tmp_path):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 30000, 30000)
    _one_line(run_cli("predict", str(trained_digits), str(bomb)), 3,
              f"error: {bomb}: refused: Image size (900000000 pixels) exceeds limit")


def test_unwritable_run_dir_is_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("train", DIGITS, *tiny_cls_overrides(blocker / "run"), "--no-progress")
    _one_line(proc, 2, f"error: run.dir: cannot write to {blocker / 'run'} (")
    if os.geteuid() != 0:  # root writes anywhere: the read-only case only shows for other users
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        proc = run_cli("train", DIGITS, *tiny_cls_overrides(ro), "--no-progress")
        _one_line(proc, 2, f"error: run.dir: cannot write to {ro} (Permission denied)")


def test_truncated_stage_json_counts_as_not_finished(tmp_path, caplog):
    from r1.pipeline import run_pipeline

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({"name": "t", "dir": str(tmp_path / "run"), "stages": [
        {"name": "a", "kind": "train", "config": DIGITS,
         "overrides": [f"{o}" for o in tiny_cls_overrides(tmp_path / "ignored", **{"train.max_steps": 2})
                       if not o.startswith("run.dir")]}]}))
    run_pipeline(recipe)
    marker = tmp_path / "run/a/stage.json"
    marker.write_text(marker.read_text()[:40])
    caplog.set_level(logging.INFO, logger="r1")
    outputs = run_pipeline(recipe)
    assert f"{marker}: unreadable (" in caplog.text and "the stage is taken as not finished" in caplog.text
    assert outputs == {"a": str(tmp_path / "run/a")}
    assert json.loads(marker.read_text())["output"] == outputs["a"]  # finished again, readable
