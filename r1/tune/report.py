"""What a study leaves in its dir: best.yaml, best.json, trials.md / trials.csv, plots/*.png."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from r1.config import load_config, save_config
from r1.errors import TuneFailed
from r1.tune.space import override, shown

log = logging.getLogger("r1.tune")

FEW_TRIALS = 20  # below this many finished trials, parameter importances are noise more than signal
COLUMNS = ("number", "state", "value", "test", "steps", "total_steps", "seconds", "params", "note")


def trial_rows(study, monitor: str) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        note = "interrupted (killed)" if attrs.get("interrupted") else (
            f"retry of {attrs['retry_of']}" if "retry_of" in attrs else "")
        rows.append({"number": t.number, "state": t.state.name, "value": t.value,
                     "test": attrs.get(f"test/{monitor}"), "steps": attrs.get("steps"),
                     "total_steps": attrs.get("total_steps"), "seconds": attrs.get("seconds"),
                     "params": " ".join(override(k, v) for k, v in t.params.items()), "note": note,
                     "shown": " ".join(shown(k, v) for k, v in t.params.items())})
    return rows


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_tables(rows: list[dict], study_dir: Path, monitor: str) -> None:
    with (study_dir / "trials.csv").open("w", newline="") as fh:  # exact values, for programs
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    heads = ["#", "state", f"val/{monitor}", f"test/{monitor}", "steps", "of", "s", "params", "note"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(_cell(r["shown" if c == "params" else c]) for c in COLUMNS) + " |" for r in rows]
    (study_dir / "trials.md").write_text("\n".join(lines) + "\n")


def step_totals(rows: list[dict]) -> dict:
    """Optimizer steps the finished trials ran, against what they would have run without pruning."""
    done = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED") and r["steps"] is not None]
    ran = sum(r["steps"] for r in done)
    full = sum(r["total_steps"] or r["steps"] for r in done)
    return {"steps_run": ran, "steps_without_pruning": full,
            "steps_saved": round(1 - ran / full, 4) if full else 0.0}


def write_best(study, setup, study_dir: Path) -> dict | None:
    """best.yaml: the study's config with the best parameters, runnable by `r1 train` as is (its run
    dir is runs/<name>-tuned; nothing of the study's own trial dirs)."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    opts = setup.opts
    cfg = load_config(opts.config, [*opts.overrides, *(override(k, v) for k, v in best.params.items())])
    cfg.run.dir = ""
    cfg.run.name = f"{cfg.run.name}-tuned"
    save_config(cfg, study_dir / "best.yaml")
    info = {"number": best.number, f"val/{setup.monitor}": best.value,
            f"test/{setup.monitor}": best.user_attrs.get(f"test/{setup.monitor}"),
            "params": best.params, "run_dir": best.user_attrs.get("run_dir"),
            "overrides": [override(k, v) for k, v in best.params.items()]}
    (study_dir / "best.json").write_text(json.dumps(info, indent=2))
    return info


def write_plots(study, study_dir: Path) -> list[str]:
    """Optimisation history, parameter importances, parallel coordinates (Optuna's matplotlib
    backend, headless). A plot Optuna cannot draw yet (e.g. importances need two finished trials
    with varied parameters) is skipped with a log line."""
    import warnings

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out = study_dir / "plots"
    out.mkdir(exist_ok=True)
    made = []
    for name, fn in (("history", ovm.plot_optimization_history), ("importances", ovm.plot_param_importances),
                     ("parallel", ovm.plot_parallel_coordinate), ("intermediate", ovm.plot_intermediate_values)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # few trials: equal importances, flat axes
                ax = fn(study)
            first = ax.flat[0] if hasattr(ax, "flat") else ax
            fig = first.figure
            done = len([t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")])
            if name == "importances" and done < FEW_TRIALS:
                first.set_title(f"{first.get_title()} (from {done} trials: a rough guide)")
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            fig.savefig(out / f"{name}.png", dpi=90)
            plt.close(fig)
            made.append(str(out / f"{name}.png"))
        except Exception as err:  # too few trials for this plot
            plt.close("all")
            log.info("plot %s skipped (%s)", name, str(err).splitlines()[0] if str(err) else type(err).__name__)
    return made


def write_report(study, setup, study_dir: Path) -> dict:
    rows = trial_rows(study, setup.monitor)
    write_tables(rows, study_dir, setup.monitor)
    best = write_best(study, setup, study_dir)
    plots = write_plots(study, study_dir)
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    summary = {"dir": str(study_dir), "monitor": setup.monitor, "direction": setup.direction,
               "trials": counts, **step_totals(rows), "best": best, "plots": plots}
    (study_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if best is None:
        raise TuneFailed(f"tune: no trial completed in {study_dir} (see trials.md and the trials' log.txt)")
    log.info("best trial %d: val/%s %.4f | %s | best.yaml (exact values), trials.md, plots in %s", best["number"],
             setup.monitor, best[f"val/{setup.monitor}"], " ".join(shown(k, v) for k, v in best["params"].items()),
             study_dir)
    finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
    if any(p.endswith("importances.png") for p in plots) and finished < FEW_TRIALS:
        log.info("plots/importances.png: from %d finished trial(s), a rough guide only (parameter importances "
                 "settle after a few tens of trials; more --trials continue this study)", finished)
    return summary
