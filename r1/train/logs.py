"""Run logging: log.txt, TensorBoard events, history.jsonl, and the one-line step format."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("r1.train")

FIXED = ("loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "mem_mb")


def setup_run_logging(run_dir: Path, is_main: bool):
    """Attach log.txt to the `r1` logger on rank 0 (replacing an earlier run's); return a TensorBoard writer."""
    if not is_main:
        logging.getLogger("r1").setLevel(logging.WARNING)
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("r1")
    logger.setLevel(logging.INFO)
    detach_run_logging()
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


def detach_run_logging(run_dir: Path | None = None) -> None:
    """Close the run's log.txt handler (any run's when `run_dir` is None): later lines stay out of it."""
    logger = logging.getLogger("r1")
    for h in list(logger.handlers):
        if getattr(h, "r1_run_file", False) and (run_dir is None or os.path.dirname(h.baseFilename)
                                                  == os.path.abspath(run_dir)):
            logger.removeHandler(h)
            h.close()


def format_duration(seconds: float) -> str:
    """45s, 1m02s, 2h05m."""
    s = round(max(seconds, 0.0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_step(rec: dict, total: int, elapsed: float | None = None, eta: float | None = None,
                primary: str | None = None) -> str:
    """`step 20/300 | loss 0.5120 (ce 0.5120) | lr 1.00e-03 | grad_norm 1.23 | 512 samples/s | mem 812 MB
    | elapsed 1m02s, ETA 3m10s`; with a primary loss part: `lm 3.0100 (total 9.3700: exit 6.0400 ...)`."""
    parts = [k for k in rec if k not in FIXED and k != "step"]
    # the family's objective (FamilySpec.primary_loss) heads the line instead of the total, which
    # auxiliary terms (early-exit heads, confidence, EWC) can dominate; history.jsonl keeps every part
    main = primary if primary in parts and len(parts) > 1 else None
    if main:
        rest = " ".join(f"{k} {rec[k]:.4f}" for k in parts if k != main)
        head = f"{main} {rec[main]:.4f} (total {rec['loss']:.4f}: {rest})"
    else:
        detail = f" ({' '.join(f'{k} {rec[k]:.4f}' for k in parts)})" if parts else ""
        head = f"loss {rec['loss']:.4f}{detail}"
    timing = ""
    if elapsed is not None:
        timing = f" | elapsed {format_duration(elapsed)}" + (f", ETA {format_duration(eta)}" if eta is not None else "")
    return (f"step {rec['step']}/{total} | {head} | lr {rec['lr']:.2e} | "
            f"grad_norm {rec['grad_norm']:.3g} | {rec['samples_per_s']:.0f} samples/s"
            + (f" ({rec['tokens_per_s']:.0f} tok/s)" if "tokens_per_s" in rec else "")
            + f" | mem {rec['mem_mb']:.0f} MB" + timing)


def _last_step(path: Path) -> int:
    """The last step history.jsonl recorded (a resumed run continues from about there), else 0."""
    if not path.is_file():
        return 0
    last = 0
    for line in path.read_text().splitlines():
        try:
            last = int(json.loads(line).get("step", last))
        except (ValueError, AttributeError):
            continue
    return last


class StepLog:
    """history.jsonl (one JSON object per logged step or evaluation) plus the step log line, with the
    wall time since this run (or resumption) started and the ETA at the rate so far (evaluations included)."""

    def __init__(self, path: Path, is_main: bool, total_steps: int = 0, start_step: int | None = None,
                 primary_loss: str | None = None):
        self.run_dir, self.primary_loss = path.parent, primary_loss
        self.start_step = (start_step if start_step is not None else _last_step(path)) if is_main else 0
        self.file = path.open("a") if is_main else None
        self.total = total_steps
        self.t0 = time.perf_counter()

    def timing(self, step: int) -> tuple[float, float | None]:
        """(seconds since start, estimated seconds left or None before the first step)."""
        elapsed = time.perf_counter() - self.t0
        done = step - self.start_step
        eta = elapsed / done * max(self.total - step, 0) if done > 0 and self.total else None
        return elapsed, eta

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
            log.info(format_step(rec, self.total, *self.timing(rec["step"]), primary=self.primary_loss))
        self.write({"step": rec["step"], **{f"train/{k}": v for k, v in rec.items() if k != "step"}}, writer)

    def close(self) -> None:
        """End of the run: history.jsonl closed, and log.txt stops taking lines (a next run or stage's)."""
        if self.file:
            self.file.close()
            self.file = None
            detach_run_logging(self.run_dir)
