"""Typed config: parsing, validation messages, overrides, variants, presets, CLI exit codes."""
from __future__ import annotations

import pytest

from r1.config import Config, explain, load_config, parse_override, to_dict
from r1.errors import ConfigError
from tests.conftest import ROOT, run_cli

DIGITS = ROOT / "configs/cls/digits.yaml"


def test_yaml_is_an_instance_of_the_typed_config():
    cfg = load_config(DIGITS)
    assert isinstance(cfg, Config)
    assert cfg.model.name == "r1_mobilenetv3" and cfg.model.width == 0.5  # flavor preset applied
    assert type(cfg.model).__name__ == "MobileNetV3Config"


def test_overrides_parse_types_and_scientific_notation():
    assert parse_override("optim.lr=3e-3") == (["optim", "lr"], 0.003)
    assert parse_override("train.grad_ckpt=true") == (["train", "grad_ckpt"], True)
    cfg = load_config(DIGITS, ["optim.lr=3e-4", "train.epochs=2", "run.dir=runs/try", "optim.betas=[0.9,0.95]"])
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.train.epochs == 2 and cfg.run.dir == "runs/try"
    assert cfg.optim.betas == [0.9, 0.95]


def test_yaml11_words_on_the_command_line():
    """`train.amp=off` is the word off (YAML 1.1 would make it false); bool fields still take on/off/yes/no."""
    cfg = load_config(DIGITS, ["train.amp=off", "train.grad_ckpt=on"])
    assert cfg.train.amp == "off" and cfg.train.grad_ckpt is True
    assert load_config(DIGITS, ["train.grad_ckpt=no"]).train.grad_ckpt is False


def test_explicit_field_beats_flavor_preset():
    cfg = load_config(DIGITS, ["model.width=1.0"])
    assert cfg.model.width == 1.0 and cfg.model.flavor == "tiny"


def test_switching_variant_picks_its_dataclass():
    cfg = load_config(DIGITS, ["model.name=resnet", "model.flavor=small"])
    assert type(cfg.model).__name__ == "ResNetConfig" and cfg.model.depth == 18


@pytest.mark.parametrize("override, message", [
    ("foo.bar=1", "unknown key foo; allowed: run, model, data, optim, sched, train"),
    ("optim.lrr=1", "unknown key optim.lrr; allowed:"),
    ("optim.lr=abc", "optim.lr: expected a number, got 'abc'"),
    ("train.epochs=1.5", "train.epochs: expected an integer, got 1.5"),
    ("train.grad_ckpt=maybe", "train.grad_ckpt: expected true or false"),
    ("optim.name=lamb", "optim.name: 'lamb' is not allowed; allowed: adamw, sgd"),
    ("optim.lr=-1", "optim.lr: -1.0 is below the minimum 0.0"),
    ("model.flavor=huge", "model.flavor: unknown flavor 'huge' for r1_mobilenetv3; allowed: tiny, small, base"),
    ("model.name=nope", "model.name: unknown model 'nope'"),
    ("optim.betas=[0.9]", "optim.betas: expected two numbers in [0, 1)"),
    ("noequals", "expected key=value"),
])
def test_bad_values_name_the_key_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(DIGITS, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_base_include_and_missing_file(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"_base_: {DIGITS}\ntrain:\n  epochs: 3\n")
    cfg = load_config(child)
    assert cfg.train.epochs == 3 and cfg.model.name == "r1_mobilenetv3"
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_round_trip_through_dict():
    cfg = load_config(DIGITS, ["optim.lr=1e-2"])
    from r1.config import from_dict
    assert from_dict(Config, to_dict(cfg)) == cfg


def test_explain_documents_every_field():
    text = "\n".join(explain(Config))
    for key in ("run.seed", "optim.lr", "train.accum_steps", "train.max_nonfinite", "model.width", "data.root"):
        assert key in text


@pytest.mark.parametrize("args, code, message", [
    (["train", "configs/cls/digits.yaml", "foo=1"], 2, "error: unknown key foo"),
    (["train", "configs/cls/digits.yaml", "optim.lr=abc"], 2, "error: optim.lr: expected a number"),
    (["train", "configs/cls/missing.yaml"], 2, "error: config file not found"),
    (["train", "configs/cls/digits.yaml", "data.name=imagefolder", "data.root=/no/such/dir"], 3,
     "error: data.root: directory not found: /no/such/dir"),
])
def test_cli_exit_codes_and_one_line_errors(args, code, message):
    proc = run_cli(*args)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_show_prints_resolved_config():
    proc = run_cli("config", "show", "configs/cls/digits.yaml", "optim.lr=0.5")
    assert proc.returncode == 0 and "lr: 0.5" in proc.stdout and "width: 0.5" in proc.stdout
