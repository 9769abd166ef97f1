"""One CLI style (spine v3): every command takes its positional CONFIG or RUN, `section.key=value`
overrides and `--config FILE`, and its flags are its section's fields (one default, one help text).

Table-driven over every command the CLI has (the click tree): a command not built from a `Command`
spec with a section, or whose flags drift from that section, fails here. Commands run up to their
own code only (their `run` is replaced), except for the wrong-section errors, which are real runs
that stop before any work."""
from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml
from typer.main import get_command

from r1.cli import app, build
from r1.cli.build import REGISTERED
from r1.command_spec import ALL
from tests.conftest import ROOT, run_cli

INTROSPECTION = {"models", "config show", "config explain"}  # print the registry or a config: no settings
DIGITS = str(ROOT / "configs/cls/digits.yaml")
REAL = {"config": DIGITS, "recipe": str(ROOT / "recipes/quickstart.yaml"),  # read before their settings
        "space": str(ROOT / "configs/cls/spaces/digits.yaml")}
COMMANDS = sorted(REGISTERED)
WITH_SECTION = [p for p in COMMANDS if REGISTERED[p].section]


def leaves(cmd, path: tuple[str, ...] = ()):
    subs = getattr(cmd, "commands", None)
    if subs is None:
        yield " ".join(path)
        return
    for name, sub in subs.items():
        yield from leaves(sub, path + (name,))


def click_command(path: str):
    cmd = get_command(app)
    for name in path.split():
        cmd = cmd.commands[name]
    return cmd


def field_default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def argv(path: str, skip: str = "") -> list[str]:
    """`path`, its required positional arguments and required flags (but `skip`'s), with placeholder values."""
    spec = REGISTERED[path]
    out = path.split() + [REAL.get(a.name, "x") for a in spec.args if not a.optional]
    for flag in spec.flags:
        if flag.required and flag.field != skip:
            out += [flag.spelling, REAL.get(flag.field, "x")]
    return out


def parsed(monkeypatch, *args: str):
    """Run `r1 ARGS` up to the command's own code: (the Invocation it gets, its section's settings)."""
    seen = {}

    def capture(target):
        def run(inv):
            seen["inv"], seen["cfg"] = inv, inv.settings()
        return run

    monkeypatch.setattr(build, "resolve", capture)
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    return seen["inv"], seen["cfg"]


def samples(spec, f: dataclasses.Field, tp) -> list | None:
    """Three valid values of field `f` (type `tp`), none its default; None where there are no three."""
    meta, default = f.metadata, field_default(f)
    if typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if meta.get("choices"):
        values = [c for c in meta["choices"] if c != default][:3]
    elif tp is str:
        values = ["a", "b", "c"]
    elif tp in (int, float):
        lo = meta["min"] if meta["min"] is not None else 0
        hi = meta["max"] if meta["max"] is not None else max(lo, default or 0) + 8
        step = (hi - lo) / 4 if tp is float else max((hi - lo) // 4, 1)
        values = [tp(lo + k * step) for k in (1, 2, 3)]
        values = [v for v in values if v != default] + ([tp(lo)] if tp(lo) != default else [])
        values = values[:3]
    else:
        return None
    return values if len(values) == 3 else None


def pick(spec):
    """A flag of `spec` to set three ways, with three values."""
    cls = spec.settings_class()
    hints, fields = typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}
    for flag in sorted(spec.flags, key=lambda fl: fl.required):  # a required one only when nothing else
        values = None if flag.parse else samples(spec, fields[flag.field], hints[flag.field])
        if values:
            return flag, values
    raise AssertionError(f"r1 {spec.typed()}: no flag to test")


def test_every_command_is_built_from_a_spec_with_settings():
    found = set(leaves(get_command(app)))
    assert found - INTROSPECTION == set(REGISTERED), "a command without a Command spec (r1/command_spec.py)"
    assert {"train", "eval", "predict", "generate", "tune", "pipeline", "export", "serve", "bench", "data inspect",
            "data clean", "data convert"} <= set(REGISTERED)
    for path in COMMANDS:
        spec = REGISTERED[path]
        assert dataclasses.is_dataclass(spec.settings_class()), path
        assert spec.section or ALL in spec.passes, f"{path}: no section of its own and no training config"


@pytest.mark.parametrize("path", COMMANDS)
def test_flags_are_the_sections_fields(path):
    spec = REGISTERED[path]
    cls = spec.settings_class()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    options = {p.name: p for p in click_command(path).params
               if p.param_type_name == "option" and p.name not in ("help", "config_file")}
    assert set(options) == {flag.name for flag in spec.flags}
    for flag in spec.flags:
        f, option = fields[flag.field], options[flag.name]
        assert option.default is None, f"{flag.spelling}: not given must mean the field's default"
        key = f"{spec.section}.{flag.field}" if spec.section else flag.field
        if flag.help:  # a flag in other units (--max-body-mb) says so, and names its field
            assert f"{key})" in flag.help
        else:
            assert option.help.endswith(f"{f.metadata['help']} (default {field_default(f)!r}; {key})")
        if flag.bounds:
            assert (option.min, option.max) == (f.metadata["min"], f.metadata["max"])
        assert flag.spelling in option.opts


@pytest.mark.parametrize("path", COMMANDS)
def test_no_flag_no_override_gives_the_defaults(path, monkeypatch):
    spec = REGISTERED[path]
    inv, cfg = parsed(monkeypatch, *argv(path))
    defaults = spec.settings_class()()
    required = {flag.field for flag in spec.flags if flag.required}
    for f in dataclasses.fields(defaults):
        if f.name not in required:
            assert getattr(cfg, f.name) == getattr(defaults, f.name), f.name
    assert (inv.overrides, inv.passed, inv.config) == ([], [], None)


@pytest.mark.parametrize("path", WITH_SECTION)
def test_config_explain_lists_every_field(path):
    spec = REGISTERED[path]
    res = run_cli("config", "explain", spec.section)
    assert res.returncode == 0, res.stderr
    for f in dataclasses.fields(spec.settings_class()):
        assert f"  {spec.section}.{f.name}: " in res.stdout, f.name


@pytest.mark.parametrize("path", WITH_SECTION)
def test_override_config_file_and_flag_set_a_value_in_that_order(path, monkeypatch, tmp_path):
    spec = REGISTERED[path]
    flag, (in_file, in_override, in_flag) = pick(spec)
    name, section = flag.field, spec.section
    file = tmp_path / "settings.yaml"
    other = {"bench": {"runs": 50}} if section != "bench" else {"serve": {"port": 1234}}  # another command's: ignored
    file.write_text(yaml.safe_dump({section: {name: in_file}, **other}))
    base = argv(path, skip=name)
    override = f"{section}.{name}={in_override}"
    assert getattr(parsed(monkeypatch, *base, override)[1], name) == in_override
    inv, cfg = parsed(monkeypatch, *base, "--config", str(file))
    assert getattr(cfg, name) == in_file and inv.config == file
    assert getattr(parsed(monkeypatch, *base, "--config", str(file), override)[1], name) == in_override
    got = parsed(monkeypatch, *base, "--config", str(file), override, flag.spelling, str(in_flag))[1]
    assert getattr(got, name) == in_flag


@pytest.mark.parametrize("path", COMMANDS)
def test_wrong_section_override_is_a_one_line_exit_2(path):
    res = run_cli(*argv(path), "nosuch.key=1")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nosuch" in lines[0], res.stderr
    spec = REGISTERED[path]
    allowed = f"takes {spec.section}.KEY=VALUE" if ALL not in spec.passes else "allowed: run, model, data"
    assert allowed in lines[0]


def test_train_takes_the_training_configs_overrides_and_its_own_flags(monkeypatch):
    inv, flags = parsed(monkeypatch, "train", DIGITS, "train.epochs=3", "optim.lr=0.1", "--resume", "--no-progress")
    assert inv.passed == ["train.epochs=3", "optim.lr=0.1"] and (flags.resume, flags.progress) == (True, False)
    inv, _ = parsed(monkeypatch, "tune", DIGITS, "--space", REAL["space"], "tune.trials=3", "train.epochs=1")
    assert inv.overrides == ["tune.trials=3"] and inv.passed == ["train.epochs=1"]
    inv, cfg = parsed(monkeypatch, "eval", "m", "eval.split=val", "data.root=d", "model.active_width=0.5")
    assert cfg.split == "val" and inv.passed == ["data.root=d", "model.active_width=0.5"]


def test_positional_values_and_overrides_mix(monkeypatch, tmp_path):
    inv, cfg = parsed(monkeypatch, "predict", "m", "a.png", "predict.top_k=5", "b=1.png", "--top-k", "4")
    assert [str(p) for p in inv.args["images"]] == ["a.png", "b=1.png"] and cfg.top_k == 4
    inv, cfg = parsed(monkeypatch, "serve", "stable=runs/a", "canary=runs/b", "serve.port=9", "--traffic", "stable=9")
    assert cfg.variants == {"stable": "runs/a", "canary": "runs/b"} and cfg.port == 9 and cfg.traffic == {"stable": 9.0}
    res = run_cli("serve", "m", "max_batch=3")  # a bare field name is an override in the wrong form
    assert res.returncode == 2 and "`r1 serve` takes serve.KEY=VALUE" in res.stderr
    res = run_cli("predict", "m", "predict.top_k=3")  # overrides only: the images are still missing
    assert res.returncode == 2 and "Missing argument 'images'" in res.stderr
    res = run_cli("data", "convert", "voc2coco", "d")
    assert res.returncode == 2 and "Missing option '--out'" in res.stderr
