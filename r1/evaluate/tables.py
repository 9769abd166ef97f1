"""A run's metrics for people: the few headline numbers of a log line, and metrics.md (a summary table
with one column per split, and one table per group of per-class metrics such as `AP/<class>`).
metrics.json keeps every number for programs. Torch-free: the CLI prints these tables too."""
from __future__ import annotations

SPLITS = ("val", "test")
ABSENT = "-"  # a metric the split cannot measure (null in metrics.json), e.g. mAP_large without large objects


def _value(v) -> str:
    if v is None:
        return ABSENT
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def headline(metrics: dict, names: tuple[str, ...] | list[str]) -> str:
    """"val/accuracy 0.9926 test/accuracy 0.9815": the named metrics of each split (measured ones only)."""
    parts = [f"{s}/{n} {_value(metrics[f'{s}/{n}'])}" for s in SPLITS for n in names
             if metrics.get(f"{s}/{n}") is not None]
    return " ".join(parts)


def _split(metrics: dict) -> tuple[dict, dict, dict]:
    """-> (summary: name -> split -> value, groups: group -> name -> split -> value, other: key -> value)."""
    summary: dict[str, dict] = {}
    groups: dict[str, dict[str, dict]] = {}
    other: dict = {}
    for key, v in metrics.items():
        split, _, name = key.partition("/")
        if split not in SPLITS:
            other[key] = v
        elif "/" in name:
            group, _, item = name.partition("/")
            groups.setdefault(group, {}).setdefault(item, {})[split] = v
        else:
            summary.setdefault(name, {})[split] = v
    return summary, groups, other


def _table(head: str, rows: dict[str, dict], splits: list[str]) -> list[str]:
    lines = [f"| {head} | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
    lines += [f"| {name} | " + " | ".join(_value(per.get(s)) for s in splits) + " |" for name, per in rows.items()]
    return lines


def summary_table(metrics: dict) -> str:
    """The split metrics without a per-class part, one column per split (markdown)."""
    summary, _, _ = _split(metrics)
    splits = [s for s in SPLITS if any(s in per for per in summary.values())]
    return "\n".join(_table("metric", summary, splits)) if summary else ""


def metrics_markdown(metrics: dict, title: str = "") -> str:
    """metrics.md: the summary table, each per-class group's table, then the run's counters."""
    summary, groups, other = _split(metrics)
    splits = [s for s in SPLITS if any(s in per for per in summary.values())]
    out = [f"# {title}", ""] if title else []
    if summary:
        out += _table("metric", summary, splits) + [""]
    for group, rows in groups.items():
        out += [f"## {group} per class", ""] + _table("class", rows, splits) + [""]
    if other:
        out += ["## run", ""] + [f"- {k}: {_value(v)}" for k, v in other.items()] + [""]
    if any(v is None for v in metrics.values()):
        out += [f"{ABSENT}: nothing to measure in that split (null in metrics.json), e.g. mAP_large of images "
                "without a large object, or the AP of a class with no object there.", ""]
    return "\n".join(out)


def groups_note(metrics: dict) -> str:
    """"AP per class (10 classes)" for the groups a summary table leaves out ("" when none)."""
    _, groups, _ = _split(metrics)
    return ", ".join(f"{g} per class ({len(rows)} classes)" for g, rows in groups.items())
