"""Issue 17 items 9-11 (config side): hostile YAML files and values end as one-line exit-2 errors."""
from __future__ import annotations

import time

import pytest

from r1.config import load_config, read_yaml, show
from r1.errors import ConfigError
from tests.conftest import ROOT, run_cli

DIGITS = ROOT / "configs/cls/digits.yaml"


def _alias_bomb(levels: int = 9) -> str:
    """503 bytes of YAML that expand to 10^levels list items (the issue's `optim.lr` bomb)."""
    items = ["&a0 [" + ",".join("x" * 10) + "]"]
    items += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "optim:\n  lr: [" + ", ".join(items) + "]\n"


def test_yaml_alias_bomb_is_refused_fast_with_a_short_message(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb())
    t0 = time.perf_counter()
    proc = run_cli("config", "show", str(bomb))
    assert time.perf_counter() - t0 < 5
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bomb}: refused: aliases expand the document past 100000 values"


def test_recursive_alias_and_alias_bomb_override_are_refused(tmp_path):
    looped = tmp_path / "loop.yaml"
    looped.write_text("x: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="refers to a node that contains it"):
        read_yaml(looped)
    bomb_value = _alias_bomb(7).split("lr: ", 1)[1].strip()
    with pytest.raises(ConfigError, match="override .*: refused: aliases expand"):
        load_config(DIGITS, [f"optim.lr={bomb_value}"])


def test_shared_values_below_the_budget_load_and_messages_are_truncated(tmp_path):
    shared = tmp_path / "shared.yaml"  # 10^4 items: allowed, but the wrong type for optim.lr
    shared.write_text(_alias_bomb(4))
    with pytest.raises(ConfigError) as err:
        load_config(shared)
    assert str(err.value).startswith("optim.lr: expected a number, got [")
    assert len(str(err.value)) < 300
    assert len(show("x" * 10**6)) <= 200


def test_base_include_cycle_and_bad_base_are_one_line_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    proc = run_cli("config", "show", str(tmp_path / "a.yaml"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: {tmp_path / 'a.yaml'}: _base_ include cycle (a.yaml -> b.yaml -> a.yaml)"
    (tmp_path / "self.yaml").write_text("_base_: self.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        read_yaml(tmp_path / "self.yaml")
    (tmp_path / "m.yaml").write_text("_base_: {a: 1}\n")
    with pytest.raises(ConfigError, match="_base_: expected a file name or a list of file names, got {'a': 1}"):
        read_yaml(tmp_path / "m.yaml")


def test_base_list_merges_in_order_and_the_file_wins(tmp_path):
    (tmp_path / "seed.yaml").write_text("run: {seed: 7, threads: 1}\n")
    (tmp_path / "top.yaml").write_text(f"_base_: [{DIGITS}, seed.yaml]\nrun: {{threads: 2}}\n")
    cfg = load_config(tmp_path / "top.yaml")
    assert (cfg.run.name, cfg.run.seed, cfg.run.threads) == ("digits", 7, 2)


@pytest.mark.parametrize("name", ["../../../escaped", "/tmp/abs", "a/../../b"])
def test_run_name_cannot_escape_runs(name):
    proc = run_cli("config", "show", str(DIGITS), f"run.name={name}")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"error: run.name: {name!r} must be a relative name inside runs/")
