"""Stage fingerprints: a finished stage is skipped only while what it computes from is unchanged.

A stage's record holds its own settings (the recipe entry), for train stages the fully resolved
training config (config file, `_base_` chain, recipe and command-line overrides, presets), for prune
stages the overrides its fine-tuning runs get, and the output hash of every stage it reads. The
fingerprint is a hash of that record; stage.json keeps both, so a change can be named in one line.
Downstream stages re-run through their inputs: a re-run upstream stage has a new output hash.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from r1.config import to_dict
from r1.pipeline.recipe import PruneStage, Recipe, TrainStage, stage_refs, train_config

# How a run is executed or logged, not what it computes: changing these re-runs nothing.
IGNORED = ("run.threads", "train.log_every")


def flatten(tree, prefix: str = "") -> dict:
    """{"train": {"epochs": 3}} -> {"train.epochs": 3}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _kept(overrides: list[str]) -> list[str]:
    return [o for o in overrides if o.split("=", 1)[0] not in IGNORED]


def stage_record(recipe: Recipe, stage, outputs: dict[str, str], hashes: dict[str, str]) -> dict:
    """What the stage's result depends on. `outputs`/`hashes`: earlier stages' output paths and hashes."""
    settings = {k: v for k, v in to_dict(stage).items() if k != "name"}
    if isinstance(settings.get("overrides"), list):
        settings["overrides"] = _kept(settings["overrides"])
    if isinstance(stage, TrainStage):  # its config file and overrides count through the resolved config
        settings = {"kind": stage.kind}
    record = {"stage": flatten(settings)}
    if isinstance(stage, TrainStage):
        cfg = train_config(recipe, stage, lambda ref: outputs[ref])
        record["config"] = {k: v for k, v in flatten(to_dict(cfg)).items() if k not in IGNORED}
    elif isinstance(stage, PruneStage):  # its fine-tuning runs take the recipe's overrides
        record["overrides"] = _kept(recipe.overrides)
    record["inputs"] = {ref: hashes.get(ref, "") for ref in dict.fromkeys(stage_refs(stage))}
    return record


def fingerprint(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def output_hash(output: str | Path) -> str:
    """Hash of a stage's result: the .onnx file, or a run dir's weights and model.json."""
    path = Path(output)
    files = [path] if path.is_file() else [path / n for n in ("model.safetensors", "model.onnx", "model.json",
                                                              "report.json") if (path / n).is_file()]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _changes(old: dict, new: dict, limit: int = 3) -> str:
    keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k, "<unset>") != new.get(k, "<unset>")]
    shown = ", ".join(f"{k} {_short(old.get(k, '<unset>'))} -> {_short(new.get(k, '<unset>'))}"
                      for k in keys[:limit])
    return shown + (f", +{len(keys) - limit} more" if len(keys) > limit else "")


def _short(value) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def why_changed(old: dict | None, new: dict) -> str:
    """One phrase naming what differs between two records, e.g. `config changed (train.epochs 30 -> 1)`."""
    if not old:
        return "no fingerprint recorded"
    reasons = []
    if old.get("stage") != new.get("stage"):
        reasons.append(f"stage settings changed ({_changes(old.get('stage', {}), new['stage'])})")
    if old.get("config") != new.get("config"):
        reasons.append(f"config changed ({_changes(old.get('config') or {}, new.get('config') or {})})")
    if old.get("overrides") != new.get("overrides"):
        reasons.append(f"overrides changed ({old.get('overrides')} -> {new.get('overrides')})")
    inputs = [k for k in new["inputs"] if old.get("inputs", {}).get(k) != new["inputs"][k]]
    if inputs:
        reasons.append(f"input{'s' if len(inputs) > 1 else ''} {', '.join(inputs)} changed")
    return "; ".join(reasons) or "fingerprint changed"
