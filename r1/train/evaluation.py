"""The trainer's evaluations: validation with the best checkpoint and early stopping during the run,
then the final evaluation, metrics.json and the run's model artifact. Each function takes the
`r1.train.Trainer` whose run it evaluates."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import r1.train.distributed as D
from r1.artifacts import save_artifact
from r1.config import to_dict
from r1.errors import ConfigError
from r1.evaluate import evaluate
from r1.evaluate.tables import headline, metrics_markdown
from r1.train.checkpoint import load_checkpoint, save_checkpoint, save_last
from r1.train.logs import format_duration

log = logging.getLogger("r1.train")


def before_eval(trainer, final: bool) -> None:
    """The callbacks' `before_eval` hook on the model about to be evaluated."""
    for cb in trainer.callbacks:
        cb.before_eval(trainer, trainer.eval_model(), final)


def evaluate_split(trainer, split: str, out_dir: Path | None = None) -> dict[str, float]:
    """The family's metrics of the evaluated model on `split` (val or test), keys prefixed `split/`."""
    dataset = {"val": trainer.data.val, "test": trainer.data.test}[split]
    if dataset is None:
        return {}
    metrics = evaluate(trainer.family, trainer.eval_model(), trainer.loader(dataset, train=False),
                       trainer.data.meta, trainer.device, out_dir)
    return {f"{split}/{k}": v for k, v in metrics.items()}


def _improved(trainer, value: float) -> bool:
    best = trainer.state["best"]
    return best is None or (value > best if trainer.mode == "max" else value < best)


def eval_and_checkpoint(trainer, history) -> bool:
    """Validate (rank 0), keep best weights, save last.pt; True when early stopping triggers."""
    stop, state = False, trainer.state
    trainer.sharding.refresh_full(trainer.model)
    if trainer.dist.is_main:
        before_eval(trainer, final=False)
        metrics = evaluate_split(trainer, "val")
        value = metrics.get(f"val/{trainer.monitor}")
        if value is None:
            raise ConfigError(f"train.monitor: {trainer.monitor!r} is not a metric of this family; "
                              f"available: {', '.join(k.split('/', 1)[1] for k in metrics)}")
        if _improved(trainer, value):
            state["best"], state["bad_evals"] = value, 0
            save_checkpoint({"model": trainer.eval_model().state_dict(), "step": state["step"]},
                            trainer.dir / "checkpoints" / "best.pt")
        else:
            state["bad_evals"] += 1
        patience = trainer.cfg.train.patience
        stop = bool(patience) and state["bad_evals"] >= patience
        asked = [cb.on_eval_end(trainer, metrics) for cb in trainer.callbacks]  # every callback sees the metrics
        stop = stop or any(asked)
        log.info("eval step %d | %s | best %s %.4f%s", state["step"], headline(metrics, _headline(trainer)),
                 trainer.monitor, state["best"], " | early stop" if stop else "")
        history.write({"step": state["step"], **metrics}, trainer.writer)
    stop = D.any_rank(stop, trainer.dist)
    save_last(trainer)
    D.barrier(trainer.dist)
    return stop


def finish(trainer, history) -> dict[str, float]:
    """The end of a run: the best weights evaluated on val and test, metrics.json and the model artifact
    written (rank 0), logs closed, the run directory released. Returns the final metrics."""
    metrics: dict[str, float] = {}
    trainer.sharding.refresh_full(trainer.model)
    if trainer.dist.is_main:
        metrics = _final_metrics(trainer)
        final = trainer.eval_model()
        for cb in trainer.callbacks:
            final = cb.on_finish(trainer, final)
        save_artifact(final, trainer.dir, trainer.data.meta, to_dict(trainer.cfg.data))
        (trainer.dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (trainer.dir / "metrics.md").write_text(metrics_markdown(metrics, f"{trainer.cfg.run.name}: final metrics"))
        history.write({"step": trainer.state["step"], "final": True, **metrics})
        log.info("done in %s | %s | every metric: %s (and metrics.json)", format_duration(trainer.state["time"]),
                 headline(metrics, _headline(trainer)), trainer.dir / "metrics.md")
        if trainer.writer:
            trainer.writer.close()
    history.close()
    if trainer.run_lock is not None:
        trainer.run_lock.release()
    D.barrier(trainer.dist)
    D.cleanup(trainer.dist)
    return metrics


def _headline(trainer) -> tuple[str, ...]:
    """The metrics a log line shows: the family's headline ones, and the monitored one."""
    from r1.family import get_family

    names = get_family(trainer.family).headline or (trainer.monitor,)
    return names if trainer.monitor in names else (trainer.monitor, *names)


def _final_metrics(trainer) -> dict[str, float]:
    """The best checkpoint's val and test metrics, with the run's training and data counters."""
    state, metrics = trainer.state, {}
    best = trainer.dir / "checkpoints" / "best.pt"
    if best.is_file():
        trainer.eval_model().load_state_dict(load_checkpoint(best)["model"])
    before_eval(trainer, final=True)
    metrics.update(evaluate_split(trainer, "val"))
    metrics.update(evaluate_split(trainer, "test", out_dir=trainer.dir))
    metrics.update({"train/steps": state["step"], "train/time_s": round(state["time"], 2),
                    "train/cpu_s": round(state.get("cpu", 0.0), 2),
                    "train/nonfinite_skipped": state["nonfinite_total"]})
    metrics.update({f"data/{k}": v for k, v in trainer.data.stats.items()}, **trainer.decode_guard.metrics())
    return metrics
