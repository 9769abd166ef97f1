"""`r1 data inspect | clean | convert`: command specs (registered by `r1.cli`) and what they run; heavy
imports happen inside. Their sections, `inspect`, `clean`, `convert`, are in r1/command_sections.py.

Exit codes: 0 done (inspect lists its findings and still exits 0), 2 a usage error (an unknown
direction, an output folder the output rules refuse: r1/outputs.py), 3 bad data, and for
`inspect --strict`, 6 when the report has findings.
"""
from __future__ import annotations

import typer

from r1.command_spec import Arg, Command, Flag, Invocation
from r1.errors import ConfigError, FindingsFound
from r1.outputs import check_folder, output_folder

STRICT_EXIT = FindingsFound.exit_code

TARGET = Arg("target", "Dataset folder (ImageFolder, VOC, COCO, text) or file, or a YAML config (its data section)",
             path=False)


def inspect_cmd(inv: Invocation) -> None:
    from r1.data_tools.inspect import inspect
    from r1.data_tools.report import summary_table, write_report
    from r1.data_tools.source import resolve

    cfg = inv.settings()
    _check_unit(cfg.unit)
    out = check_folder(cfg.out, "--out", "inspect")
    report = inspect(resolve(inv.args["target"]), cfg.near_bits, cfg.unit)
    files = write_report(report, output_folder(out, "--out", "inspect"))
    typer.echo(summary_table(report))
    typer.echo(f"\nreport: {files['md']} (+ {files['json'].name}, PNG histograms)")
    if cfg.strict and report["findings"]:
        raise FindingsFound(f"--strict: {len(report['findings'])} finding(s): "
                            + ", ".join(f["check"] for f in report["findings"]))


def clean_cmd(inv: Invocation) -> None:
    from r1.data_tools.clean import clean
    from r1.data_tools.source import resolve

    cfg = inv.settings()
    _check_unit(cfg.unit)
    if cfg.dedup not in ("none", "exact", "near"):
        raise ConfigError(f"--dedup: {cfg.dedup!r} is not allowed; allowed: none, exact, near")
    out = check_folder(cfg.out, "--out", "clean", fresh=True)
    result = clean(resolve(inv.args["target"]), out, cfg.near_bits, unit=cfg.unit, dedup=cfg.dedup, lm=cfg.lm,
                   max_ppl=cfg.max_ppl, drop_share=cfg.drop_share)
    kept = result.get("kept", result.get("docs_out"))
    reasons = result.get("dropped_by_reason") or {k: result[k] for k in ("exact_duplicates", "near_duplicates")
                                                  if result.get(k)}
    typer.echo(f"kept {kept}, dropped {result['dropped']}" + "".join(f", {k} {v}" for k, v in reasons.items()))
    if "perplexity" in result:
        typer.echo(f"perplexity filter: dropped {result['perplexity']['dropped']} "
                   f"(median perplexity kept {result['perplexity']['median_kept']})")
    typer.echo(f"report: {out / 'clean_report.json'}")


def convert_cmd(inv: Invocation) -> None:
    from r1.data_tools.convert import convert

    cfg = inv.settings()
    direction = inv.args["direction"]
    out = check_folder(cfg.out, "--out", "convert", fresh=True)
    counts = convert(direction, inv.args["root"], out)
    typer.echo(f"{direction}: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f" -> {out}")


def _check_unit(unit: str) -> None:
    if unit not in ("auto", "paragraph", "line"):
        raise ConfigError(f"--unit: {unit!r} is not allowed; allowed: auto, paragraph, line")


COMMANDS = [
    Command("inspect", "Counts, class balance, sizes, boxes, corrupt files, duplicates and leaks across splits; "
            "for text, vocabulary, word frequencies, entropy, duplicates and non-printable bytes.", inspect_cmd,
            "inspect", path="data inspect", args=(TARGET,),
            flags=(Flag("out", path=True), Flag("strict", "--strict"), Flag("near_bits", bounds=True),
                   Flag("unit"))),
    Command("clean", "Write a cleaned copy (never modifies the source): drop corrupt images, duplicates and "
            "cross-split leaks (from train); text: dedupe and the perplexity filter.", clean_cmd, "clean",
            path="data clean", args=(TARGET,),
            flags=(Flag("out", path=True, required=True), Flag("near_bits", bounds=True), Flag("unit"),
                   Flag("dedup"), Flag("lm"), Flag("max_ppl", bounds=True), Flag("drop_share", bounds=True))),
    Command("convert", "VOC -> COCO JSON (OUT/annotations/instances_<split>.json + OUT/images/) or back; zero-area "
            "boxes are dropped and counted. Train on the result with data.name=coco data.root=OUT.", convert_cmd,
            "convert", path="data convert",
            args=(Arg("direction", "voc2coco or coco2voc", path=False), Arg("root", "Source dataset folder")),
            flags=(Flag("out", path=True, required=True),)),
]
