"""Check the command lines of a README without running them (a dry run).

Every code-block line that runs R1 (`bin/r1 ...`, `... -m r1.cli ...`, `make TARGET` through the
Makefile's `$(R1)` lines) is parsed by the real CLI (click `make_context`: arguments and options,
nothing invoked); every input path it names must be a file of the repository (configs, recipes,
examples) or something an earlier line makes (a run dir of `train`, the stage dirs of `pipeline`,
a file of `export --out`); `train`, `pipeline` and `config show` resolve their config and overrides
(`load_config` / `load_recipe`), and `eval` overrides are applied to the config of the run they
evaluate. `curl ... file=@PATH` must name an existing file. A bare `r1 ...` line is a problem: it
is not on PATH after the README's set-up lines.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

try:  # typer >= 0.2x carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions

LAUNCHERS = ("bin/r1", "./bin/r1")
RUN_ROOTS = ("runs", "outputs")  # git-ignored output folders: a path there must be made by an earlier line
OUTPUT_PARAMS = {"out", "json_out", "coco_json", "dir"}  # Path options that name what a command writes
OUTPUT_KEYS = {"run.dir", "run.name"}  # overrides that name an output, not an input
RUN_FILES = {"model.safetensors", "model.json", "config.yaml", "metrics.json", "model.onnx", "eval.json",
             "report.md", "report.json", "log.txt", "history.jsonl", "checkpoints"}


@dataclass
class Command:
    """One R1 invocation found in the README, parsed."""
    lineno: int
    text: str
    argv: list[str]
    path: tuple[str, ...] = ()  # subcommand path, e.g. ("config", "show"); () for `bin/r1 --help`
    params: dict[str, Any] = field(default_factory=dict)
    cfg: Any = None  # resolved Config of train / config show
    reads: list[str] = field(default_factory=list)  # normalized input paths


@dataclass
class Made:
    kind: str  # "run" (a run dir), "dir" (a pipeline dir) or "file"
    cfg: Any = None  # training config of a run dir, where known


@dataclass
class Report:
    commands: list[Command]
    problems: list[str]
    made: dict[str, Made]


def code_lines(markdown: str) -> list[tuple[int, str]]:
    """(line number, text) of every code line: fenced blocks and indented blocks (4 spaces after a
    blank line; an indented line right after paragraph text is not code). Lines ending in a
    backslash are joined with the next."""
    out, fenced, in_code, prev_blank = [], False, False, True
    for n, raw in enumerate(markdown.splitlines(), 1):
        if raw.lstrip().startswith("```"):
            fenced, in_code, prev_blank = not fenced, False, False
            continue
        if fenced:
            out.append((n, raw))
            continue
        if not raw.strip():
            prev_blank = True
            continue
        in_code = raw.startswith("    ") and (prev_blank or in_code)
        prev_blank = False
        if in_code:
            out.append((n, raw[4:]))
    joined: list[tuple[int, str]] = []
    for n, text in out:
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + text.strip())
        else:
            joined.append((n, text))
    return joined


def strip_comment(text: str) -> str:
    """Cut a shell comment: `#` at the start of a word, outside quotes."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i]
    return text


def norm(path: str) -> str:
    return os.path.normpath(path) if path else path


class Checker:
    def __init__(self, root: Path):
        self.root = root
        self.made: dict[str, Made] = {}
        self.problems: list[str] = []
        self.commands: list[Command] = []

    # ------------------------------------------------------------------ lines
    def check_text(self, markdown: str) -> Report:
        for n, text in code_lines(markdown):
            self.check_line(n, text)
        return Report(self.commands, self.problems, self.made)

    def check_line(self, n: int, text: str) -> None:
        try:
            words = shlex.split(strip_comment(text))
        except ValueError as err:
            if re.match(r"\s*(\./)?(bin/)?r1(\s|$)", text):  # a command, not a path such as r1/evaluate/
                self.fail(n, text, f"cannot split into words: {err}")
            return
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]  # VAR=value prefixes
        if not words:
            return
        if words[0] in LAUNCHERS:
            self.check_r1(n, text, words[1:])
        elif words[0] == "r1":
            self.fail(n, text, "`r1` is not on PATH after the set-up lines: write `bin/r1 ...`")
        elif "r1.cli" in words and words.index("r1.cli") > 0 and words[words.index("r1.cli") - 1] == "-m":
            self.check_r1(n, text, words[words.index("r1.cli") + 1:])
        elif words[0] == "make":
            for target in [w for w in words[1:] if not w.startswith("-") and "=" not in w]:
                for argv in self.make_r1_lines(target):
                    self.check_r1(n, text, argv)
        elif words[0] == "curl":
            for w in words:
                m = re.search(r"(?:^|=)@(.+)$", w)
                if m:
                    self.need(n, text, m.group(1))

    def make_r1_lines(self, target: str) -> list[list[str]]:
        """The `$(R1) ...` lines of a Makefile target (e.g. `make demo`), as r1 argument lists."""
        lines = (self.root / "Makefile").read_text().splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith(f"{target}:")), None)
        if start is None:
            return []
        out = []
        for line in lines[start + 1:]:
            if not line.startswith("\t"):
                break
            if "$(R1)" in line:
                out.append(shlex.split(line.split("$(R1)", 1)[1]))
        return out

    def fail(self, n: int, text: str, message: str) -> None:
        self.problems.append(f"README line {n}: `{text.strip()}`: {message}")

    # ------------------------------------------------------------------ paths
    def need(self, n: int, text: str, path: str) -> str:
        """Record a problem unless `path` exists in the repository or an earlier line makes it."""
        p = norm(path)
        if p in self.made:
            return p
        parts = Path(p).parts
        if parts and parts[0] in RUN_ROOTS:
            parent = str(Path(p).parent)
            if not (parent in self.made and self.made[parent].kind in ("run", "dir") and Path(p).name in RUN_FILES):
                self.fail(n, text, f"{path}: no earlier line (nor `make demo`) makes it")
        elif parts and parts[0] == "..":
            # data outside the project (e.g. ../shared/data/bccd): checked where that folder exists
            top = self.root.joinpath(*parts[:2])
            if top.exists() and not (self.root / p).exists():
                self.fail(n, text, f"{path}: not found")
        elif not (self.root / p).exists():
            self.fail(n, text, f"{path}: no such file in the repository, and no earlier line makes it")
        return p

    def make(self, path: str | Path, kind: str, cfg: Any = None) -> None:
        self.made[norm(str(path))] = Made(kind, cfg)

    def path_overrides(self, n: int, text: str, overrides: list[str]) -> list[str]:
        """Override values that name files or run dirs (e.g. distill.teacher=runs/x) must exist."""
        reads = []
        for o in overrides:
            key, _, value = o.partition("=")
            if key not in OUTPUT_KEYS and "/" in value and "://" not in value and not value.startswith("@"):
                reads.append(self.need(n, text, value))
        return reads

    # ------------------------------------------------------------------ r1
    def parse(self, argv: list[str]) -> tuple[tuple[str, ...], dict | None]:
        """The real CLI parses `argv` (no command runs): (subcommand path, leaf params or None when an
        eager option such as --help ended parsing)."""
        from typer.main import get_command

        from r1.cli import app

        cmd, parent, path, args = get_command(app), None, (), list(argv)
        while True:
            try:
                ctx = cmd.make_context(path[-1] if path else "r1", args, parent=parent)
            except typer.Exit as err:  # an eager option (--help) ended parsing
                if err.exit_code:
                    raise
                return path, None
            if not hasattr(cmd, "resolve_command"):
                return path, dict(ctx.params)
            rest = list(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])) + ctx.args
            if not rest:
                raise click_exceptions.UsageError("missing command", ctx)
            name, cmd, args = cmd.resolve_command(ctx, rest)
            parent, path = ctx, path + (name,)

    def check_r1(self, n: int, text: str, argv: list[str]) -> None:
        from r1.errors import R1Error

        c = Command(n, text.strip(), list(argv))
        try:
            c.path, params = self.parse(argv)
        except click_exceptions.ClickException as err:
            self.fail(n, text, f"does not parse: {err.format_message()}")
            return
        except typer.Exit as err:
            self.fail(n, text, f"exits {err.exit_code} while its arguments are parsed")
            return
        self.commands.append(c)
        if params is None:
            return
        c.params = params
        try:
            before = len(self.problems)
            self.check_params(n, text, c)
            if len(self.problems) == before:  # a missing config is reported once, not again by its loader
                self.resolve(n, text, c)
        except R1Error as err:
            self.fail(n, text, str(err))

    def check_params(self, n: int, text: str, c: Command) -> None:
        """Path arguments: inputs must exist or be made earlier; outputs are recorded as made."""
        from typer.main import get_command

        from r1.cli import app

        leaf = get_command(app)
        for name in c.path:
            leaf = leaf.commands[name]
        for p in leaf.params:
            value = c.params.get(p.name)
            values = value if isinstance(value, (list, tuple)) else [value]
            values = [v for v in values if isinstance(v, Path)]  # a path list may hold overrides too (predict)
            if value is None or not values:
                continue  # not a path parameter, or not given
            if p.name in OUTPUT_PARAMS:
                for v in values:
                    self.make(v, "file")
            else:
                c.reads += [self.need(n, text, str(v)) for v in values]
        if c.path == ("bench",) and c.params.get("target") != "serve":
            c.reads.append(self.need(n, text, c.params["target"]))

    def resolve(self, n: int, text: str, c: Command) -> None:
        """Configs and overrides of the config-taking commands, and what each command makes."""
        from r1.cli.build import REGISTERED
        from r1.config import Config, apply_overrides, from_dict, load_config, to_dict

        p, overrides = c.params, list(c.params.get("overrides") or [])
        spec = REGISTERED.get(" ".join(c.path))
        own = [o for o in overrides if spec is not None and spec.section and o.startswith(f"{spec.section}.")]
        overrides = [o for o in overrides if o not in own]  # the command's own section, not the training config
        if c.path in (("train",), ("config", "show")):
            c.reads += self.path_overrides(n, text, overrides)
            c.cfg = load_config(self.root / p["config"], overrides)
            if c.path == ("train",):
                run_dir = norm(str(c.cfg.run.resolved_dir()))
                if p.get("resume") and self.made.get(run_dir, Made("")).kind != "run":
                    self.fail(n, text, f"--resume: no earlier line trains {run_dir}")
                self.make(run_dir, "run", c.cfg)
        elif c.path == ("pipeline",):
            c.reads += self.path_overrides(n, text, overrides)
            dirs = [o.partition("=")[2] for o in own if o.startswith("pipeline.dir=")]
            self.make_pipeline(p["recipe"], overrides, p.get("dir") or (dirs[-1] if dirs else None))
        elif c.path == ("eval",):
            bad = [o for o in overrides if not o.startswith(("data.", "model."))]
            if bad:
                self.fail(n, text, f"{bad[0]}: only data.* and model.* overrides apply at evaluation")
            made = self.made.get(norm(str(p["model"])))
            if made is not None and made.cfg is not None:
                from_dict(Config, apply_overrides(to_dict(made.cfg), overrides))
        elif c.path == ("export",) and p.get("out") is None:
            model = Path(p["model"])
            self.make(model.with_suffix(".engine") if model.suffix == ".onnx" else model / "model.onnx", "file")

    def make_pipeline(self, recipe_path: Path, overrides: list[str], root_dir: Path | None = None) -> None:
        """The recipe's stage dirs, under its `dir` or the pipeline's own root option (`--dir`) when given."""
        from r1.pipeline.recipe import TrainStage, load_recipe, train_config

        recipe = load_recipe(self.root / recipe_path, overrides)
        base = Path(root_dir) if root_dir else recipe.dir
        self.make(base, "dir")
        for stage in recipe.stages:
            out = base / stage.name
            cfg = None
            if isinstance(stage, TrainStage):
                cfg = train_config(recipe, stage, lambda ref: str(recipe.dir / ref))
            elif getattr(stage, "source", ""):
                cfg = self.made.get(norm(str(base / stage.source)), Made("")).cfg
            self.make(out, "run", cfg)


def check_readme(markdown: str, root: Path) -> Report:
    """Dry-run every R1 line of `markdown` as typed from `root` (the repository root)."""
    return Checker(root).check_text(markdown)
