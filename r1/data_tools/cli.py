"""`r1 data inspect | clean | convert` (typer sub-app; heavy imports happen inside the commands).

Exit codes: 0 done (inspect lists its findings and still exits 0), 3 bad data, and for
`inspect --strict`, 6 when the report has findings.
"""
from __future__ import annotations

from pathlib import Path

import typer

from r1.errors import FindingsFound

STRICT_EXIT = FindingsFound.exit_code

data_app = typer.Typer(no_args_is_help=True, help="Look at a dataset before training on it: inspect, clean, convert.")

TARGET = typer.Argument(..., help="Dataset folder (ImageFolder, VOC, COCO, text) or file, or a YAML config "
                                  "(its data section)")


@data_app.command("inspect")
def inspect_cmd(target: str = TARGET,
                out: Path = typer.Option(Path("data_report"), "--out", help="Folder for data_report.md/.json "
                                         "and the PNG histograms"),
                strict: bool = typer.Option(False, "--strict", help=f"Exit {STRICT_EXIT} when anything is found"),
                near_bits: int = typer.Option(4, "--near-bits", min=0, max=32,
                                              help="dHash bits (of 64) near-duplicate images may differ in"),
                unit: str = typer.Option("auto", "--unit", help="Text documents: auto, paragraph or line")):
    """Counts, class balance, sizes, boxes, corrupt files, duplicates and leaks across splits; for text,
    vocabulary, word frequencies, entropy, duplicates and non-printable bytes."""
    from r1.data_tools.inspect import inspect
    from r1.data_tools.report import summary_table, write_report
    from r1.data_tools.source import resolve

    _check_unit(unit)
    report = inspect(resolve(target), near_bits, unit)
    files = write_report(report, out)
    typer.echo(summary_table(report))
    typer.echo(f"\nreport: {files['md']} (+ {files['json'].name}, PNG histograms)")
    if strict and report["findings"]:
        raise FindingsFound(f"--strict: {len(report['findings'])} finding(s): "
                            + ", ".join(f["check"] for f in report["findings"]))


@data_app.command("clean")
def clean_cmd(target: str = TARGET,
              out: Path = typer.Option(..., "--out", help="New folder for the cleaned copy + clean_report.json"),
              near_bits: int = typer.Option(4, "--near-bits", min=0, max=32, help="Images: see `inspect`"),
              unit: str = typer.Option("auto", "--unit", help="Text documents: auto, paragraph or line"),
              dedup: str = typer.Option("near", "--dedup", help="Text dedupe: none, exact or near"),
              lm: str = typer.Option("", "--lm", help="Text: language-model run that scores each document"),
              max_ppl: float = typer.Option(0.0, "--max-ppl", min=0.0, help="Text: drop documents above this "
                                            "perplexity under --lm"),
              drop_share: float = typer.Option(0.0, "--drop-share", min=0.0, max=0.99,
                                               help="Text: drop this share of the highest-perplexity documents")):
    """Write a cleaned copy (never modifies the source): drop corrupt images, duplicates and cross-split
    leaks (from train); text: dedupe and the perplexity filter."""
    from r1.data_tools.clean import clean
    from r1.data_tools.source import resolve
    from r1.errors import ConfigError

    _check_unit(unit)
    if dedup not in ("none", "exact", "near"):
        raise ConfigError(f"--dedup: {dedup!r} is not allowed; allowed: none, exact, near")
    result = clean(resolve(target), out, near_bits, unit=unit, dedup=dedup, lm=lm, max_ppl=max_ppl,
                   drop_share=drop_share)
    kept = result.get("kept", result.get("docs_out"))
    reasons = result.get("dropped_by_reason") or {k: result[k] for k in ("exact_duplicates", "near_duplicates")
                                                  if result.get(k)}
    typer.echo(f"kept {kept}, dropped {result['dropped']}" + "".join(f", {k} {v}" for k, v in reasons.items()))
    if "perplexity" in result:
        typer.echo(f"perplexity filter: dropped {result['perplexity']['dropped']} "
                   f"(median perplexity kept {result['perplexity']['median_kept']})")
    typer.echo(f"report: {out / 'clean_report.json'}")


@data_app.command("convert")
def convert_cmd(direction: str = typer.Argument(..., help="voc2coco or coco2voc"),
                root: Path = typer.Argument(..., help="Source dataset folder"),
                out: Path = typer.Option(..., "--out", help="New folder for the converted dataset")):
    """VOC -> COCO JSON (OUT/annotations/instances_<split>.json + OUT/images/) or back; zero-area boxes
    are dropped and counted. Train on the result with data.name=coco data.root=OUT."""
    from r1.data_tools.convert import convert

    counts = convert(direction, root, out)
    typer.echo(f"{direction}: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f" -> {out}")


def _check_unit(unit: str) -> None:
    from r1.errors import ConfigError
    if unit not in ("auto", "paragraph", "line"):
        raise ConfigError(f"--unit: {unit!r} is not allowed; allowed: auto, paragraph, line")
