"""The trainer callback that turns a training run into an Optuna trial with pruning."""
from __future__ import annotations

import logging

from r1.train.callbacks import Callback

log = logging.getLogger("r1.tune")


class TrialPruning(Callback):
    """After each validation: report the monitored metric at the current optimizer step
    (`trial.report`), and when the pruner says so (`trial.should_prune`) ask the trainer to stop.
    The trainer then ends the run cleanly (final evaluation, artifacts); the objective raises
    `optuna.TrialPruned` once `fit` has returned, so the trial is recorded as PRUNED."""

    order = 200

    def __init__(self, trial):
        self.trial = trial
        self.pruned_at: int | None = None
        self.total_steps = 0

    def on_setup(self, trainer) -> None:
        self.total_steps = trainer.total_steps

    @property
    def pruned(self) -> bool:
        return self.pruned_at is not None

    def on_eval_end(self, trainer, metrics: dict) -> bool:
        value = metrics.get(f"val/{trainer.monitor}")
        if value is None:
            return False
        step = trainer.state["step"]
        self.trial.report(float(value), step)
        if self.trial.should_prune():
            self.pruned_at = step
            log.info("trial %d pruned at step %d/%d (val/%s %.4f)", self.trial.number, step,
                     trainer.total_steps, trainer.monitor, value)
            return True
        return False
