"""Help and code agree: every value a command's code accepts for a setting is named in that flag's help
and in `r1 config explain`; help text has one defaults style and no hard line breaks.

The accepted values are read from the code itself: each setting is given a bogus value and the one-line
error lists what is allowed (`...; allowed: a, b, c`)."""
from __future__ import annotations

import dataclasses
import re

import pytest
from typer.main import get_command

from r1.cli import app
from r1.cli.build import REGISTERED
from tests.conftest import ROOT, run_cli

DIGITS = str(ROOT / "configs/cls/digits.yaml")


def _click(path: str):
    cmd = get_command(app)
    for name in path.split():
        cmd = cmd.commands[name]
    return cmd


def _every_command(cmd=None, path=()):
    cmd = cmd or get_command(app)
    yield " ".join(path), cmd
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        yield from _every_command(sub, path + (name,))


def _flag_help(path: str, spelling: str) -> str:
    return next(p.help for p in _click(path).params if spelling in getattr(p, "opts", ()))


def _explain(section: str, field: str) -> str:
    res = run_cli("config", "explain", section)
    assert res.returncode == 0, res.stderr
    return next(line for line in res.stdout.splitlines() if line.startswith(f"  {section}.{field}: "))


def _named(value: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(value)}(?![\w])", text) is not None


# (command line with a bogus value for the flag, command path, flag, section.field)
CASES = [
    (["predict", "{run}", "{image}", "--runtime", "bogus"], "predict", "--runtime", "predict.runtime"),
    (["eval", "{run}", "--runtime", "bogus"], "eval", "--runtime", "eval.runtime"),
    (["serve", "{run}", "--runtime", "bogus"], "serve", "--runtime", "serve.runtime"),
    (["bench", "{run}", "--runtime", "bogus"], "bench", "--runtime", "bench.runtime"),
    (["generate", "{run}", "--runtime", "bogus"], "generate", "--runtime", "generate.runtime"),
    (["eval", "{run}", "--split", "bogus"], "eval", "--split", "eval.split"),
    (["eval", "{run}", "--attack", "bogus"], "eval", "--attack", "eval.attack"),
    (["serve", "{run}", "--inference", "bogus"], "serve", "--inference", "serve.inference"),
    (["export", "{run}", "--format", "bogus"], "export", "--format", "export.format"),
    (["bench", "serve", "http://127.0.0.1:1", "--client", "bogus"], "bench", "--client", "bench.client"),
    (["tune", DIGITS, "--space", str(ROOT / "configs/cls/spaces/digits.yaml"), "--pruner", "bogus", "--dir", "{tmp}"],
     "tune", "--pruner", "tune.pruner"),
    (["data", "inspect", "{text}", "--unit", "bogus", "--out", "{tmp}"], "data inspect", "--unit", "inspect.unit"),
    (["data", "clean", "{text}", "--dedup", "bogus", "--out", "{tmp}/c"], "data clean", "--dedup", "clean.dedup"),
]


@pytest.mark.parametrize("argv, path, flag, key", CASES, ids=[f"{c[1]} {c[2]}" for c in CASES])
def test_every_value_the_code_accepts_is_in_the_flags_help_and_config_explain(argv, path, flag, key, trained_digits,
                                                                              tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("one paragraph\n\nanother\n")
    args = [a.format(run=trained_digits, image=ROOT / "examples/digit-3.png", tmp=tmp_path / "o", text=text)
            for a in argv]
    res = run_cli(*args)
    assert res.returncode == 2, res.stderr
    allowed = re.search(r"allowed: (.*)$", res.stderr.strip().splitlines()[-1]).group(1)
    values = [v for v in re.split(r",\s*", allowed) if v]
    assert len(values) >= 2, res.stderr
    section, field = key.split(".")
    helps = {"help": _flag_help(path, flag), "config explain": _explain(section, field)}
    for where, help_text in helps.items():
        missing = [v for v in values if not _named(v, help_text)]
        assert not missing, f"r1 {path} {flag}: {missing} accepted but not in its {where}: {help_text}"


def test_every_model_command_has_a_runtime_flag_naming_every_runtime():
    from r1.command_sections import RUNTIMES

    for path in ("eval", "predict", "serve", "bench"):
        assert all(_named(rt, _flag_help(path, "--runtime")) for rt in RUNTIMES), path
    from r1.family import get_family
    from r1.models import load_all

    load_all()
    assert all(_named(rt, _flag_help("generate", "--runtime")) for rt in get_family("lm").runtimes)


@pytest.mark.parametrize("path", sorted(REGISTERED))
def test_choices_fields_name_their_choices_in_the_flag_help(path):
    spec = REGISTERED[path]
    fields = {f.name: f for f in dataclasses.fields(spec.settings_class())}
    for flag in spec.flags:
        choices = [c for c in fields[flag.field].metadata.get("choices") or () if c != ""]
        help_text = _flag_help(path, flag.spelling.split("/")[0])
        assert all(_named(str(c), help_text) for c in choices), f"r1 {path} {flag.spelling}: {choices}: {help_text}"


def test_help_has_one_defaults_style_and_no_hard_line_breaks():
    """Defaults read `(default X; section.key)` everywhere, never typer's `[default: X]`; help text is
    one paragraph that the terminal wraps (a hard break reads as a broken line at other widths)."""
    for path, cmd in _every_command():
        texts = [("the command", cmd.help or "")] + [(getattr(p, "name", ""), getattr(p, "help", "") or "")
                                                     for p in cmd.params]
        for name, text in texts:
            assert "\n" not in text, f"r1 {path} {name}: a hard line break in {text!r}"
        res = run_cli(*path.split(), "--help")
        assert res.returncode == 0 and "[default:" not in res.stdout, f"r1 {path} --help: typer's [default: ...]"
