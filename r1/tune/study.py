"""The study: TPE sampling, pruning, SQLite storage, resume after a kill, parallel trial processes.

A study dir holds `tune.db` (unless --storage names another database), `trials/<number>/` (one run dir
per trial) and, after each invocation, the report (r1.tune.report). Re-running the same command on the
same dir continues the study: trials left RUNNING by a killed process are marked FAIL (user attr
`interrupted`) and their parameters are queued again, then only the trials still missing (COMPLETE +
PRUNED short of --trials) run.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from r1.config import load_config
from r1.errors import ConfigError, TuneFailed
from r1.tune.space import Param, check_against_config, load_space, override, shown

log = logging.getLogger("r1.tune")

PRUNERS = ("median", "hyperband", "none")
STUDY_NAME = "r1-tune"
DB_NAME = "tune.db"


@dataclass
class TuneOptions:
    config: str
    space: str
    trials: int
    dir: str
    storage: str = ""
    jobs: int = 1
    pruner: str = "median"
    seed: int = 0
    startup: int = 5
    overrides: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"--trials: expected at least 1, got {self.trials}")
        if self.jobs < 1:
            raise ConfigError(f"--jobs: expected at least 1, got {self.jobs}")
        if self.startup < 0:
            raise ConfigError(f"--startup: expected 0 or more, got {self.startup}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"--pruner: {self.pruner!r} is not allowed; allowed: {', '.join(PRUNERS)}")
        if self.storage and not self.storage.startswith(("sqlite:///", "postgresql", "mysql")):
            raise ConfigError(f"--storage: {self.storage!r} is not a database URL; expected e.g. "
                              f"sqlite:///{Path(self.dir) / DB_NAME}")
        if self.storage.startswith("sqlite:///"):  # a database file: the output-place rules (r1/outputs.py)
            from r1.outputs import check_location
            check_location(self.storage[len("sqlite:///"):], "--storage")
        from r1.outputs import check_folder
        check_folder(self.dir, "--dir", "tune", reuse=("stage",))  # a pipeline's tune stage
        reserved = [o for o in self.overrides if o.split("=", 1)[0] in ("run.dir", "run.name")]
        if reserved:
            raise ConfigError(f"override {reserved[0]!r} is not allowed: each trial runs in <study dir>/trials/<n>; "
                              "choose the study dir with --dir")

    def study_name(self) -> str:
        """`r1-tune` in the study dir's own database; a shared --storage holds one study per dir name."""
        return f"{STUDY_NAME}-{Path(self.dir).resolve().name}" if self.storage else STUDY_NAME

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.dir).resolve() / DB_NAME}"


@dataclass
class Setup:
    """What every process of a study needs, resolved once (picklable for spawned workers)."""
    opts: TuneOptions
    params: list[Param]
    monitor: str
    direction: str  # maximize | minimize
    threads: int


def prepare(opts: TuneOptions) -> Setup:
    """Validate options, space and config (no training yet); resolve the metric and threads."""
    opts.validate()
    params = load_space(opts.space)
    base = load_config(opts.config, opts.overrides)
    check_against_config(params, opts.config, opts.overrides, opts.space)
    from r1.family import get_family
    from r1.registry import get_entry
    from r1.train.hardware import physical_cores

    spec = get_family(get_entry(base.model.name).family)
    monitor = base.train.monitor or spec.monitor
    mode = spec.mode if base.train.monitor_mode == "auto" else base.train.monitor_mode
    threads = base.run.threads or max(1, physical_cores() // opts.jobs)
    return Setup(opts, params, monitor, "maximize" if mode == "max" else "minimize", threads)


def _quiet_optuna() -> None:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_study(setup: Setup, salt: int = 0):
    """The study (created on first use). The sampler's seed is --seed plus `salt`: each process and each
    continuation of a study draws its own random start-up points instead of repeating earlier ones."""
    import optuna
    from optuna.storages import RDBStorage

    _quiet_optuna()
    opts = setup.opts
    url = opts.storage_url()
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    try:
        storage = RDBStorage(url, engine_kwargs=kwargs)
    except Exception as err:  # a bad URL or an unreachable database
        raise ConfigError(f"--storage: cannot open {url} ({err.__class__.__name__}: {err})") from None
    startup = opts.startup
    sampler = optuna.samplers.TPESampler(seed=opts.seed + salt, n_startup_trials=startup)
    pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0),
              "hyperband": lambda: optuna.pruners.HyperbandPruner(),
              "none": lambda: optuna.pruners.NopPruner()}[opts.pruner]()
    return optuna.create_study(storage=storage, sampler=sampler, pruner=pruner, study_name=opts.study_name(),
                               direction=setup.direction, load_if_exists=True)


def _fingerprint(setup: Setup) -> dict:
    """What a study's trials are comparable under: a re-run with another space or config is refused."""
    return {"config": str(Path(setup.opts.config).resolve()), "overrides": list(setup.opts.overrides),
            "space": {p.key: p.describe() for p in setup.params}, "monitor": setup.monitor,
            "direction": setup.direction}


def check_same_study(study, setup: Setup) -> None:
    mine, saved = _fingerprint(setup), study.user_attrs.get("setup")
    if saved is None:
        study.set_user_attr("setup", mine)
        return
    diff = [k for k in mine if json.dumps(mine[k], sort_keys=True) != json.dumps(saved.get(k), sort_keys=True)]
    if diff:
        raise ConfigError(f"--dir {setup.opts.dir}: this study was started with another {diff[0]} "
                          f"({json.dumps(saved.get(diff[0]))[:120]}); continue it with the same settings or "
                          "choose a new --dir")


def recover(study) -> list[int]:
    """Trials a killed process left RUNNING: mark them FAIL (`interrupted`) and queue their parameters
    again. Returns their numbers. Only call while no other process works on the study (the study lock)."""
    from optuna.trial import Trial, TrialState

    zombies = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in zombies:
        Trial(study, t._trial_id).set_user_attr("interrupted", True)
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        log.info("trial %d was interrupted (the study process was killed): marked FAIL, queued again", t.number)
    return [t.number for t in zombies]


def finished(study) -> int:
    from optuna.trial import TrialState
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


class Objective:
    """One trial = one `fit` of the config with the trial's parameters, in <dir>/trials/<number>."""

    def __init__(self, setup: Setup):
        self.setup = setup

    def __call__(self, trial) -> float:
        import optuna

        from r1.train import fit
        from r1.train.logs import detach_run_logging
        from r1.tune.callback import TrialPruning

        s = self.setup
        values = {p.key: p.suggest(trial) for p in s.params}
        run_dir = Path(s.opts.dir) / "trials" / f"{trial.number:04d}"
        if run_dir.exists():  # left by an older study in this dir under the same number
            shutil.rmtree(run_dir)
        cfg = load_config(s.opts.config, [*s.opts.overrides, *(override(k, v) for k, v in values.items()),
                                          f"run.dir={run_dir}", f"run.name=trial{trial.number:04d}",
                                          f"run.threads={s.threads}"])
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("pid", os.getpid())
        pruning = TrialPruning(trial)
        t0 = time.perf_counter()
        log.info("trial %d: %s", trial.number, " ".join(shown(k, v) for k, v in values.items()))
        try:
            metrics = fit(cfg, callbacks=[pruning])
        finally:
            detach_run_logging(run_dir)
        trial.set_user_attr("steps", int(metrics.get("train/steps", 0)))
        trial.set_user_attr("total_steps", pruning.total_steps)
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
        test = metrics.get(f"test/{s.monitor}")
        if test is not None:
            trial.set_user_attr(f"test/{s.monitor}", float(test))
        value = metrics.get(f"val/{s.monitor}")
        trial.set_user_attr(f"val/{s.monitor}", value)
        if pruning.pruned:
            raise optuna.TrialPruned(f"pruned at step {pruning.pruned_at}")
        if value is None:
            raise TuneFailed(f"trial {trial.number}: the run reported no val/{s.monitor} (does the data have "
                             "a validation split?)")
        log.info("trial %d: val/%s %.4f after %d steps", trial.number, s.monitor, value, metrics["train/steps"])
        return float(value)


def _optimize(setup: Setup, n_trials: int, index: int = 0) -> None:
    study = open_study(setup)
    study = open_study(setup, salt=len(study.get_trials(deepcopy=False)) + 1000 * index)
    study.optimize(Objective(setup), n_trials=n_trials, catch=(Exception,))


def _worker(setup: Setup, n_trials: int, index: int) -> None:
    """A spawned process: runs `n_trials` trials of the shared study. It dies with the study process
    (Linux), so a kill -9 of `r1 tune` leaves no orphan training on: its trials are RUNNING zombies
    that the next invocation marks and runs again."""
    _die_with_parent()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[job {index}] %(message)s"))
    top = logging.getLogger("r1.tune")
    top.addHandler(handler)
    top.setLevel(logging.INFO)
    _optimize(setup, n_trials, index)


def _die_with_parent() -> None:
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: a killed study's workers finish their current trial


def split(total: int, jobs: int) -> list[int]:
    """`total` trials over at most `jobs` processes, as evenly as possible (no empty process)."""
    jobs = max(1, min(jobs, total))
    return [total // jobs + (i < total % jobs) for i in range(jobs)]


def run_parallel(setup: Setup, remaining: int) -> None:
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    procs = [ctx.Process(target=_worker, args=(setup, n, i), name=f"r1-tune-{i}")
             for i, n in enumerate(split(remaining, setup.opts.jobs))]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    bad = [f"{p.name} exit code {p.exitcode}" for p in procs if p.exitcode != 0]
    if bad:
        raise TuneFailed(f"tune: worker processes failed ({', '.join(bad)}); the study continues on re-run")


def run_study(opts: TuneOptions) -> dict:
    """Run (or continue) a study to `opts.trials` finished trials; write the report; return its summary."""
    from r1.train import rundir
    from r1.tune.report import write_report

    setup = prepare(opts)
    study_dir = Path(opts.dir)  # checked by opts.validate() (r1/outputs.py)
    lock = rundir.lock(study_dir, kind="tune")  # one process drives a study dir at a time (recover() relies on it)
    try:
        study = open_study(setup)
        check_same_study(study, setup)
        retried = recover(study)
        done = finished(study)
        remaining = max(0, opts.trials - done)
        procs = len(split(remaining, opts.jobs)) if remaining else 0
        log.info("study %s: %d of %d trials finished%s; running %d (%d process%s, %d thread%s each, pruner %s)",
                 study_dir, done, opts.trials, f", {len(retried)} interrupted queued again" if retried else "",
                 remaining, procs, "" if procs == 1 else "es", setup.threads, "s" if setup.threads > 1 else "",
                 opts.pruner)
        if procs > 1:
            run_parallel(setup, remaining)
        elif remaining:
            _optimize(setup, remaining)
        study = open_study(setup)
        return write_report(study, setup, study_dir)
    finally:
        lock.release()

