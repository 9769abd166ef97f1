"""Run logging: step lines with elapsed/ETA and the primary loss, one log.txt per run, no duplicate
console lines, progress lines during the LM's exit calibration."""
from __future__ import annotations

import json
import logging
import time

import torch

from r1.config import load_config
from r1.train import fit
from r1.train.logs import StepLog, format_duration, format_step
from tests.conftest import ROOT, tiny_cls_overrides

REC = {"lr": 1e-3, "grad_norm": 1.0, "samples_per_s": 100.0, "mem_mb": 10.0}


def test_step_line_headlines_the_primary_loss_and_keeps_the_total():
    lm = format_step({"step": 5, "loss": 9.37, "lm": 3.01, "exit": 6.04, "conf": 0.32, **REC}, 10, primary="lm")
    assert "| lm 3.0100 (total 9.3700: exit 6.0400 conf 0.3200) |" in lm
    ce = format_step({"step": 5, "loss": 0.5, "ce": 0.4, "kd": 0.1, **REC}, 10)
    assert "| loss 0.5000 (ce 0.4000 kd 0.1000) |" in ce
    only = format_step({"step": 5, "loss": 3.0, "lm": 3.0, **REC}, 10, primary="lm")  # nothing else: the total is the lm loss
    assert "| loss 3.0000 (lm 3.0000) |" in only


def test_step_line_has_elapsed_and_eta_from_the_rate_since_start(tmp_path):
    (tmp_path / "history.jsonl").write_text(json.dumps({"step": 40, "train/loss": 1.0}) + "\n")
    steps = StepLog(tmp_path / "history.jsonl", True, total_steps=100)  # resumed at step 40
    assert steps.start_step == 40
    steps.t0 = time.perf_counter() - 20.0  # 20 s for 10 steps: 50 steps left take 100 s
    elapsed, eta = steps.timing(50)
    assert abs(elapsed - 20) < 1 and abs(eta - 100) < 5
    line = format_step({"step": 50, "loss": 1.0, **REC}, 100, elapsed, eta)
    assert line.endswith("| elapsed 20s, ETA 1m40s")
    assert [format_duration(s) for s in (4.4, 62, 7500)] == ["4s", "1m02s", "2h05m"]
    steps.close()


def _mlp(run_dir):
    over = {"model.name": "mlp", "model.flavor": "tiny", "model.in_features": 3 * 16 * 16,
            "train.max_steps": 2, "train.eval_every": 2, "train.log_every": 1}
    return load_config(ROOT / "configs/cls/digits.yaml", tiny_cls_overrides(run_dir, **over))


def test_two_runs_in_one_process_keep_their_own_log_txt(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    fit(_mlp(a))
    logging.getLogger("r1.pipeline").info("between the runs")
    fit(_mlp(b))
    logging.getLogger("r1.pipeline").info("after the runs")
    log_a, log_b = (a / "log.txt").read_text(), (b / "log.txt").read_text()
    assert f"run {a} |" in log_a and f"run {b} |" in log_b
    for text, other in ((log_a, b), (log_b, a)):
        assert f"run {other} |" not in text and "between the runs" not in text and "after the runs" not in text
    assert "| elapsed " in log_a and ", ETA " in log_a  # step lines carry timing outside a terminal too
    assert not any(getattr(h, "r1_run_file", False) for h in logging.getLogger("r1").handlers)


def test_console_lines_print_once_after_a_library_configures_the_root_logger(capsys):
    from r1.cli.console import console_logging as _console_logging

    top = logging.getLogger()
    saved = list(top.handlers)
    for h in saved:  # as outside pytest: the root logger starts without handlers
        top.removeHandler(h)
    try:
        _console_logging()
        logging.basicConfig()  # what a library's root-level logging.info() does (rouge_score's scorer did)
        logging.getLogger("r1.train").info("one line")
        logging.getLogger("other.lib").info("not shown")
        logging.getLogger("other.lib").warning("a library warning")
    finally:
        for h in list(top.handlers):
            top.removeHandler(h)
        for h in saved:
            top.addHandler(h)
    err = capsys.readouterr().err
    assert err.count("one line") == 1 and "not shown" not in err and err.count("a library warning") == 1


def test_exit_calibration_logs_progress(caplog):
    from r1.models.lm.early_exit import calibrate_exits
    from r1.registry import build_model

    torch.manual_seed(0)
    m = build_model("r1_lm", flavor="tiny", num_classes=20).eval()
    x = torch.randint(0, 20, (8, 16), generator=torch.Generator().manual_seed(1))
    batches = [(x[i:i + 4], x[i:i + 4].roll(-1, 1)) for i in (0, 4)]
    with caplog.at_level(logging.INFO, logger="r1.models.lm.early_exit"):
        calibrate_exits(m, batches, 10.0, progress_every=0.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "exit calibration: 2 validation batches, loss budget 10.000"
    assert any(line.startswith("exit calibration: full-depth pass, 2/2 batches | elapsed ") for line in lines)
    assert any(line.startswith("exit calibration: early-exit check 1 of ~") for line in lines)


def test_final_line_is_short_and_metrics_md_holds_every_metric(trained_digits):
    """The run ends with one short line (the family's headline metrics per split); metrics.md has the
    summary and per-class tables; a metric with nothing to measure is '-' there and null in metrics.json."""
    from r1.evaluate.tables import groups_note, headline, metrics_markdown, summary_table

    done = [ln for ln in (trained_digits / "log.txt").read_text().splitlines() if "r1.train: done in " in ln][-1]
    assert "val/accuracy" in done and "test/accuracy" in done and "macro_f1" not in done and len(done) < 250
    assert "| metric | val | test |" in (trained_digits / "metrics.md").read_text()
    det = {"val/mAP": 0.41, "val/mAP_large": None, "val/AP/0": 0.5, "val/AP/1": None, "test/mAP": 0.39,
           "test/mAP_large": None, "test/AP/0": 0.4, "test/AP/1": 0.3, "train/steps": 120}
    assert headline(det, ("mAP", "mAP_large")) == "val/mAP 0.4100 test/mAP 0.3900"
    assert summary_table(det).splitlines() == ["| metric | val | test |", "|---|---:|---:|", "| mAP | 0.4100 | 0.3900 |",
                                               "| mAP_large | - | - |"]
    md = metrics_markdown(det)
    assert "## AP per class" in md and "| 1 | - | 0.3000 |" in md and "- train/steps: 120" in md
    assert "nothing to measure" in md and groups_note(det) == "AP per class (2 classes)"
