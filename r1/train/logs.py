"""Run logging: log.txt, TensorBoard events, history.jsonl, and the one-line step format."""
from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("r1.train")

FIXED = ("loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "mem_mb")


def setup_run_logging(run_dir: Path, is_main: bool):
    """Attach log.txt to the `r1` logger on rank 0; return a TensorBoard writer (or None)."""
    if not is_main:
        logging.getLogger("r1").setLevel(logging.WARNING)
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("r1")
    logger.setLevel(logging.INFO)
    for h in list(logger.handlers):
        if getattr(h, "r1_run_file", False):
            logger.removeHandler(h)
            h.close()
    fh = logging.FileHandler(run_dir / "log.txt")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    fh.r1_run_file = True
    logger.addHandler(fh)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a declared dependency; keep training if it is broken
        log.warning("tensorboard unavailable: no event files")
        return None
    return SummaryWriter(str(run_dir / "events"))


def format_step(rec: dict, total: int) -> str:
    """`step 20/300 | loss 0.5120 (ce 0.5120) | lr 1.00e-03 | grad_norm 1.23 | 512 samples/s | mem 812 MB`."""
    parts = [k for k in rec if k not in FIXED and k != "step"]
    detail = f" ({' '.join(f'{k} {rec[k]:.4f}' for k in parts)})" if parts else ""
    return (f"step {rec['step']}/{total} | loss {rec['loss']:.4f}{detail} | lr {rec['lr']:.2e} | "
            f"grad_norm {rec['grad_norm']:.3g} | {rec['samples_per_s']:.0f} samples/s"
            + (f" ({rec['tokens_per_s']:.0f} tok/s)" if "tokens_per_s" in rec else "")
            + f" | mem {rec['mem_mb']:.0f} MB")


class StepLog:
    """history.jsonl (one JSON object per logged step or evaluation) plus the step log line."""

    def __init__(self, path: Path, is_main: bool, total_steps: int = 0):
        self.file = path.open("a") if is_main else None
        self.total = total_steps

    def write(self, rec: dict, writer=None) -> None:
        if self.file:
            self.file.write(json.dumps(rec) + "\n")
            self.file.flush()
        if writer is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)):
                    writer.add_scalar(k, v, rec["step"])

    def log_train(self, rec: dict, writer=None) -> None:
        if self.file:
            log.info(format_step(rec, self.total))
        self.write({"step": rec["step"], **{f"train/{k}": v for k, v in rec.items() if k != "step"}}, writer)

    def close(self) -> None:
        if self.file:
            self.file.close()
