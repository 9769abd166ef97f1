"""Write an inspect report: data_report.json, data_report.md, one PNG histogram each, and the
terminal summary (plain text: the CLI prints it)."""
from __future__ import annotations

import json
import re
from pathlib import Path


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def write_histograms(hist: dict[str, list], out: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for name, values in hist.items():
        if not values:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=90)
        ax.hist(values, bins=min(40, max(5, len(set(values)))), color="#4a7ab5")
        ax.set_xlabel(name)
        ax.set_ylabel("count")
        fig.tight_layout()
        path = out / f"hist_{_slug(name)}.png"
        fig.savefig(path)
        plt.close(fig)
        files.append(path.name)
    return files


def _rows(stats: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for k, v in stats.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and all(not isinstance(x, (dict, list)) for x in v.values()) and len(v) <= 12:
            rows.append((key, ", ".join(f"{a}: {b}" for a, b in v.items())))
        elif isinstance(v, dict):
            rows += _rows(v, key + ".")
        elif isinstance(v, list):
            text = ", ".join(f"{a[0]} ({a[1]})" if isinstance(a, (list, tuple)) else str(a) for a in v[:20])
            rows.append((key, text + (" ..." if len(v) > 20 else "")))
        else:
            rows.append((key, str(v)))
    return rows


def summary_table(report: dict) -> str:
    """The terminal table: statistics, then one line per finding."""
    rows = _rows(report["stats"])
    width = max(len(k) for k, _ in rows)
    lines = [f"r1 data inspect: {report['source']}", ""]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += ["", f"findings: {len(report['findings']) or 'none'}"]
    lines += [f"  [{f['check']}] {f['message']}" for f in report["findings"]]
    return "\n".join(lines)


def to_markdown(report: dict, images: list[str]) -> str:
    md = [f"# Data report: {report['source']}", "", "## Findings", ""]
    if not report["findings"]:
        md.append("None.")
    for f in report["findings"]:
        md.append(f"- **{f['check']}**: {f['message']}")
        md += [f"  - `{e}`" for e in f["examples"]]
    md += ["", "## Statistics", "", "| statistic | value |", "|---|---|"]
    md += [f"| {k} | {v.replace('|', '/')} |" for k, v in _rows(report["stats"])]
    if images:
        md += ["", "## Histograms", ""] + [f"![{p}]({p})" for p in images]
    return "\n".join(md) + "\n"


def write_report(report: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    images = write_histograms(report["histograms"], out)
    body = {k: v for k, v in report.items() if k != "histograms"}
    (out / "data_report.json").write_text(json.dumps({**body, "histograms": images}, indent=1, default=str))
    (out / "data_report.md").write_text(to_markdown(report, images))
    return {"json": out / "data_report.json", "md": out / "data_report.md"}
