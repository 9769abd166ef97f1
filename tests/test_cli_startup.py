"""Start-up cost of `r1` and the config sections of serve / export / bench.

Reading and validating any config (training or command sections) must not import torch: that is
what keeps `r1 --help` and config errors well under a second (benchmarks/startup.py times them).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from r1 import __version__
from r1.config_commands import ServeConfig, load_section
from r1.errors import ConfigError
from tests.conftest import ROOT, run_cli, run_r1

HEAVY = ("torch", "torchvision", "fastapi", "onnxruntime")


def test_cli_and_every_config_load_without_heavy_imports():
    code = textwrap.dedent(f"""
        import sys
        import r1.cli
        from r1.config import load_config, to_dict
        from r1.config_commands import SECTIONS, load_section
        for path in sorted(__import__("glob").glob("configs/*/*.yaml")):
            to_dict(load_config(path, ["train.epochs=2"]))
        for section in SECTIONS:
            load_section(section, "configs/serve.yaml", [], {{}})
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_config_error_exit_code_in_a_real_process():
    res = run_r1("train", "configs/cls/digits.yaml", "optim.lrr=1")
    assert res.returncode == 2
    assert res.stderr.strip() == ("error: unknown key optim.lrr; allowed: name, lr, weight_decay, betas, eps, "
                                  "momentum, nesterov")


def test_light_variant_configs_are_the_registered_ones():
    import r1.data  # noqa: F401  (registers every dataset)
    from r1.config import DataConfig, ModelConfig
    from r1.data import _DATA
    from r1.registry import _MODELS, list_models

    assert list_models()
    for name, entry in _MODELS.items():
        assert ModelConfig._variants[name] is entry.config_cls, name
        assert ModelConfig._flavors[name] is entry.flavors, name
    assert set(_DATA) <= set(DataConfig._variants)


def test_version():
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"r1 {__version__}"


def test_config_explain_filters_by_section():
    res = run_cli("config", "explain", "serve")
    assert res.returncode == 0
    assert "serve.max_batch: int = 32" in res.stdout and "optim.lr" not in res.stdout
    res = run_cli("config", "explain", "optim")
    assert res.returncode == 0 and "optim.lr" in res.stdout and "serve." not in res.stdout
    res = run_cli("config", "explain", "model")
    assert "when model.name=r1_lm" in res.stdout
    res = run_cli("config", "explain", "servr")
    assert res.returncode == 2
    assert "unknown section 'servr'; allowed: run, model, data" in res.stderr and "serve, export, bench" in res.stderr


def test_serve_section_precedence_flag_over_override_over_yaml(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("serve:\n  max_batch: 4\n  max_wait_ms: 1.5\n  port: 9000\n")
    cfg = load_section("serve", path, ["serve.max_batch=8", "serve.port=9001"], {"port": 9002, "threads": None})
    assert isinstance(cfg, ServeConfig)
    assert (cfg.max_batch, cfg.max_wait_ms, cfg.port, cfg.threads) == (8, 1.5, 9002, 1)
    assert load_section("serve").max_batch == ServeConfig().max_batch == 32


@pytest.mark.parametrize("text, overrides, flags, message", [
    ("serve:\n  max_batchh: 4\n", [], {}, "unknown key serve.max_batchh; allowed: model, runtime, host"),
    ("serve:\n  max_batch: many\n", [], {}, "serve.max_batch: expected an integer, got 'many'"),
    ("serve:\n  inference: fork\n", [], {}, "serve.inference: 'fork' is not allowed; allowed: process, thread"),
    ("server:\n  port: 1\n", [], {}, "unknown key server; allowed: serve, export, bench"),
    ("", ["max_batch=3"], {}, "override 'max_batch=3': `r1 serve` takes serve.KEY=VALUE"),
    ("", ["bench.runs=30"], {}, "`r1 serve` takes serve.KEY=VALUE"),
    ("", [], {"max_batch": 0}, "--max-batch (serve.max_batch): 0 is below the minimum 1"),
])
def test_serve_section_errors_name_the_key(tmp_path, text, overrides, flags, message):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_section("serve", path, overrides, flags)
    assert message in str(info.value)


def test_shipped_serve_yaml_has_all_three_sections():
    serve = load_section("serve", ROOT / "configs/serve.yaml")
    assert serve.max_batch == 16 and serve.max_wait_ms == 2.0
    assert load_section("export", ROOT / "configs/serve.yaml").format == "onnx"
    assert load_section("bench", ROOT / "configs/serve.yaml").batch_sizes == [1, 8, 32]


def test_commands_take_config_overrides_and_flags(tmp_path):
    res = run_cli("serve", "--config", str(ROOT / "configs/serve.yaml"))
    assert res.returncode == 2 and "serve.model: no model given" in res.stderr
    res = run_cli("serve", str(tmp_path / "m"), "serve.max_queue=0")
    assert res.returncode == 2 and "serve.max_queue: 0 is below the minimum 1" in res.stderr
    res = run_cli("serve", "a", "b")
    assert res.returncode == 2 and "unexpected argument 'b'" in res.stderr
    res = run_cli("export", str(tmp_path / "m"), "export.format=tflite")
    assert res.returncode == 2 and "export.format: 'tflite' is not allowed; allowed: onnx, tensorrt" in res.stderr
    res = run_cli("bench", str(tmp_path / "m"), "bench.runs=5", "--threads", "2")
    assert res.returncode == 2 and "bench.runs: 5 is below the minimum 20" in res.stderr
    res = run_cli("bench", str(tmp_path / "m"), "--batch-sizes", "1,x")
    assert res.returncode == 2 and "--batch-sizes: expected comma-separated integers" in res.stderr


def test_serve_limits_match_the_request_schema():
    from r1 import config_commands
    from r1.input_kinds import text

    assert (config_commands.MAX_NEW_TOKENS, config_commands.MAX_TEXT_CHARS) == (text.MAX_NEW_TOKENS,
                                                                                text.MAX_TEXT_CHARS)
    with pytest.raises(ConfigError, match=r"^serve\.max_new_tokens: 5000 is above the maximum 4096"):
        ServeConfig(max_new_tokens=5000).validate()


@pytest.mark.parametrize("args, message", [
    (["nosuch"], "No such command 'nosuch'"),
    (["train"], "Missing argument 'config'"),
    (["predict", "m", "x.png", "--draw-threshold", "2"], "--draw-threshold"),
])
def test_usage_errors_exit_2_without_traceback(args, message):
    res = run_cli(*args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
