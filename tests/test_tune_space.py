"""`r1 tune` search spaces: parsing, and one-line errors naming the key."""
from __future__ import annotations

import pytest

from r1.errors import ConfigError
from r1.tune.space import check_against_config, override, parse_space
from tests.conftest import ROOT, run_cli

DIGITS = ROOT / "configs/cls/digits.yaml"


def test_space_parses_every_type():
    params = parse_space({"optim.lr": {"type": "float", "low": "1e-4", "high": 1.0e-2, "log": True},
                          "data.batch_size": {"type": "categorical", "choices": [16, 32]},
                          "train.accum_steps": {"type": "int", "low": 1, "high": 4, "step": 1}}, "s.yaml")
    lr, bs, acc = params
    assert (lr.type, lr.low, lr.high, lr.log) == ("float", 1e-4, 1e-2, True)  # "1e-4" (a YAML 1.1 string) is a number
    assert bs.choices == (16, 32) and bs.corners() == [16, 32]
    assert (acc.low, acc.high, acc.step) == (1, 4, 1)
    assert override("optim.lr", 0.1) == "optim.lr=0.1" and override("train.ema", True) == "train.ema=true"


@pytest.mark.parametrize("space, message", [
    ({}, "non-empty mapping"),
    ({"lr": {"type": "float", "low": 0, "high": 1}}, "key 'lr' is not a dotted config key"),
    ({"optim.lr": 0.1}, "optim.lr: expected a mapping"),
    ({"optim.lr": {"type": "real", "low": 0, "high": 1}}, "optim.lr.type: 'real' is not allowed; allowed: float, int"),
    ({"optim.lr": {"type": "float", "low": 1, "high": 1}}, "optim.lr: low (1) must be below high (1)"),
    ({"optim.lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "optim.lr.low: log: true needs low > 0"),
    ({"optim.lr": {"type": "float", "low": 0, "high": 1, "choices": [1]}}, "optim.lr.choices: unknown for type float"),
    ({"optim.lr": {"type": "float", "low": "x", "high": 1}}, "optim.lr.low: expected a number, got 'x'"),
    ({"train.epochs": {"type": "int", "low": 1.5, "high": 3}}, "train.epochs.low: expected an integer"),
    ({"train.epochs": {"type": "int", "low": 1, "high": 3, "step": 5}}, "train.epochs.step: expected 0 < step"),
    ({"data.batch_size": {"type": "categorical", "choices": []}}, "data.batch_size.choices: expected a non-empty list"),
    ({"data.batch_size": {"type": "categorical", "choices": [8, 8]}}, "duplicate values"),
    ({"run.threads": {"type": "int", "low": 1, "high": 2}}, "run.threads: the study sets run.threads"),
])
def test_space_errors_name_the_key(space, message):
    with pytest.raises(ConfigError, match=None) as err:
        parse_space(space, "s.yaml")
    text = str(err.value)
    assert message in text and "\n" not in text


def test_space_is_checked_against_the_config():
    unknown = parse_space({"optim.lrr": {"type": "float", "low": 0.1, "high": 0.2}}, "s.yaml")
    with pytest.raises(ConfigError, match=r"s.yaml: optim.lrr: value 0.1 is not accepted by .*lrr"):
        check_against_config(unknown, DIGITS, [], "s.yaml")
    too_high = parse_space({"optim.momentum": {"type": "float", "low": 0.5, "high": 2.0}}, "s.yaml")
    with pytest.raises(ConfigError, match=r"optim.momentum: value 2.0 is not accepted"):
        check_against_config(too_high, DIGITS, [], "s.yaml")
    check_against_config(parse_space({"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2}}, "s.yaml"),
                         DIGITS, [], "s.yaml")


def test_cli_errors_are_one_line(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    cases = [(["--pruner", "asha"], "--pruner: 'asha' is not allowed; allowed: median, hyperband, none"),
             (["--trials", "0"], "--trials: expected at least 1"),
             (["--jobs", "0"], "--jobs: expected at least 1"),
             (["--space", str(tmp_path / "nope.yaml")], "--space: file not found"),
             (["run.dir=x"], "override 'run.dir=x' is not allowed"),
             (["--storage", "tune.db"], "--storage: 'tune.db' is not a database URL")]
    for extra, message in cases:
        args = ["tune", str(DIGITS), "--space", str(space), "--dir", str(tmp_path / "study"), *extra]
        result = run_cli(*args)
        assert result.returncode == 2, (extra, result.stderr)
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], (extra, result.stderr)
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim.lr: {type: float, low: 1.0, high: 0.5}\n")
    result = run_cli("tune", str(DIGITS), "--space", str(bad), "--dir", str(tmp_path / "study"))
    assert result.returncode == 2 and "optim.lr: low (1.0) must be below high (0.5)" in result.stderr


def test_shipped_space_fits_its_config():
    from r1.tune.space import load_space

    path = ROOT / "configs/det/spaces/digits.yaml"
    params = load_space(path)
    assert len(params) >= 4
    check_against_config(params, ROOT / "configs/det/digits.yaml", [], str(path))


def test_shown_values_round_floats_for_people_only():
    from r1.tune.space import override, shown

    assert shown("optim.lr", 0.0025533788451512357) == "optim.lr=0.002553"
    assert override("optim.lr", 0.0025533788451512357) == "optim.lr=0.0025533788451512357"  # what configs get
    assert shown("train.epochs", 30) == "train.epochs=30" and shown("train.ema", True) == "train.ema=true"
    assert shown("optim.lr", 1.23456e-05) == "optim.lr=1.235e-05"
