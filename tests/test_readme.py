"""The README works verbatim: every `bin/r1` line parses and resolves (a dry run, tests/readme_lines.py),
and the cheap lines (help, config, model table, a 2-epoch digits run and the eval/predict that read it)
run for real, in-process, from a scratch directory laid out like the repository."""
from __future__ import annotations

import subprocess
import textwrap

import pytest
from typer.testing import CliRunner

from tests.conftest import ROOT
from tests.readme_lines import Command, check_readme

README = (ROOT / "README.md").read_text()


def fake_readme(*lines: str) -> str:
    """A README with one indented code block holding `lines`."""
    return "Text.\n\n" + "".join(f"    {line}\n" for line in lines) + "\nMore text.\n"


def problems(*lines: str) -> list[str]:
    return check_readme(fake_readme(*lines), ROOT).problems


# ---------------------------------------------------------------- the README itself

def test_every_readme_r1_line_parses_and_resolves():
    report = check_readme(README, ROOT)
    assert report.problems == []
    paths = {c.path for c in report.commands}
    # the checker really saw the README's commands (a parsing slip would silently check nothing)
    assert {("train",), ("eval",), ("predict",), ("pipeline",), ("export",), ("serve",), ("config", "show")} <= paths
    assert len(report.commands) >= 25


def test_readme_run_names_are_made_by_earlier_lines():
    made = check_readme(README, ROOT).made
    for run in ("runs/quickstart/student_kd", "runs/try", "runs/det_digits", "runs/lm-embedded/instruct"):
        assert made[run].kind == "run", run


def test_readme_sample_inputs_are_small_and_documented():
    examples = ROOT / "examples"
    samples = [p for p in examples.iterdir() if p.suffix in (".png", ".jpg")]
    assert len(samples) >= 4
    assert sum(p.stat().st_size for p in samples) < 100_000
    listed = (examples / "README.md").read_text()
    assert all(p.name in listed for p in samples)


def test_launcher_without_venv_says_how_to_make_it(tmp_path):
    (tmp_path / "bin").mkdir()
    launcher = tmp_path / "bin" / "r1"
    launcher.write_bytes((ROOT / "bin" / "r1").read_bytes())
    launcher.chmod(0o755)
    out = subprocess.run([str(launcher), "--help"], check=False, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "make install" in out.stderr and len(out.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- the checker catches mistakes

def test_checker_accepts_a_good_readme():
    assert problems("make demo", "bin/r1 eval runs/quickstart/student --split val",
                    "bin/r1 predict runs/quickstart/pruned examples/digit-3.png --top-k 1") == []
    assert problems("make demo", "bin/r1 eval runs/quickstart/student eval.split=val data.batch_size=8",
                    "bin/r1 predict runs/quickstart/pruned examples/digit-3.png predict.top_k=1",
                    "bin/r1 pipeline recipes/quickstart.yaml pipeline.dir=runs/q2 train.epochs=1",
                    "bin/r1 eval runs/q2/student") == []


@pytest.mark.parametrize("line, needle", [
    ("bin/r1 train configs/cls/digits.yaml optim.lrr=3e-3", "optim.lrr"),            # unknown key
    ("bin/r1 train configs/cls/digits.yaml optim.lr=fast", "optim.lr"),              # wrong type
    ("bin/r1 config show configs/cls/digitz.yaml", "digitz.yaml"),                   # missing config
    ("bin/r1 pipeline recipes/quickstart.yaml train.epochz=1", "train.epochz"),      # bad recipe override
    ("bin/r1 eval runs/never", "runs/never"),                                        # run dir nobody makes
    ("bin/r1 trian configs/cls/digits.yaml", "trian"),                               # unknown subcommand
    ("bin/r1 models --sizes", "--sizes"),                                            # unknown option
    ("r1 models", "bin/r1"),                                                         # not on PATH
    ("curl -F file=@examples/nope.png http://127.0.0.1:8000/v1/predict", "examples/nope.png"),
    ("bin/r1 train configs/cls/digits.yaml distill.teacher=runs/quickstart/teachr", "teachr"),
])
def test_checker_reports_a_bad_line(line, needle):
    found = problems(line)
    assert len(found) == 1 and needle in found[0], found


def test_checker_reports_missing_input_file_after_a_good_train_line():
    found = problems("bin/r1 train configs/cls/digits.yaml run.dir=runs/a",
                     "bin/r1 predict runs/a examples/some_digit.png")
    assert len(found) == 1 and "examples/some_digit.png" in found[0] and "line 4" in found[0]


def test_checker_needs_the_producer_before_the_consumer():
    found = problems("bin/r1 eval runs/a", "bin/r1 train configs/cls/digits.yaml run.dir=runs/a")
    assert len(found) == 1 and "runs/a" in found[0]


def test_checker_applies_eval_overrides_to_the_evaluated_runs_config():
    slim = "bin/r1 train configs/cls/digits.yaml model.name=r1_slim_mobilenetv3 run.dir=runs/s"
    assert problems(slim, "bin/r1 eval runs/s model.active_width=0.5") == []
    found = problems("bin/r1 train configs/cls/digits.yaml run.dir=runs/p", "bin/r1 eval runs/p model.active_width=0.5")
    assert len(found) == 1 and "active_width" in found[0]
    found = problems(slim, "bin/r1 eval runs/s optim.lr=1")
    assert len(found) == 1 and "optim.lr" in found[0]


def test_checker_reads_indented_fenced_and_continued_lines_only():
    text = textwrap.dedent("""\
        A paragraph
            r1 not-code, a lazy paragraph continuation

        ```
        bin/r1 config show configs/cls/nope.yaml
        ```

            bin/r1 config show \\
                configs/cls/nope2.yaml
        """)
    found = check_readme(text, ROOT).problems
    assert len(found) == 2 and "nope.yaml" in found[0] and "nope2.yaml" in found[1]


# ---------------------------------------------------------------- the cheap lines, for real

CHEAP_PATHS = {(), ("models",), ("config", "show"), ("config", "explain")}


def cheap(c: Command, ran: set[str]) -> bool:
    """Seconds-long lines: help, config, the model table, a <= 2-epoch digits run (from scratch) and
    eval/predict of a run that ran here."""
    if c.path in CHEAP_PATHS or "--help" in c.argv:
        return True
    if c.path == ("train",):
        t = c.cfg.train
        return (c.cfg.data.name == "digits" and t.max_steps == 0 and t.epochs <= 2 and not c.cfg.distill.teacher
                and not t.init_from)
    return c.path in (("eval",), ("predict",)) and bool(c.reads) and c.reads[0] in ran


def test_cheap_readme_lines_run(tmp_path, monkeypatch):
    from r1.cli import app

    report = check_readme(README, ROOT)
    assert report.problems == []
    for name in ("configs", "recipes", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    runner, ran, done = CliRunner(), set(), []
    for c in report.commands:
        if not cheap(c, ran):
            continue
        argv = c.argv + (["run.threads=1"] if c.path == ("train",) else [])  # the test machine is shared
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, f"README line {c.lineno}: {c.text}\n{result.output}\n{result.exception!r}"
        if c.path == ("train",):
            ran.add(str(c.cfg.run.resolved_dir()))
        done.append(c.path)
    # the README keeps a few cheap lines: the help, config and model table, and the train -> eval -> predict chain
    assert {(), ("models",), ("config", "show"), ("train",), ("eval",), ("predict",)} <= set(done), done
    assert (tmp_path / "runs" / "try" / "eval.json").is_file()

