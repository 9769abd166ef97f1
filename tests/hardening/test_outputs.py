"""Issue 30 finding 1: one output guard (r1/outputs.py) for every command that writes. Every command
that takes an output path goes through the same bad destinations: exit 2, one line, nothing written.
The table must list every output option of every command (found in the commands' specs), so a new
command with an output option and no row here fails `test_every_output_option_is_in_the_table`."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from r1.errors import ConfigError
from r1.outputs import MARKER, check_file, check_folder, output_folder, record_file, written_by_r1
from tests.conftest import ROOT, run_cli
from tests.data.conftest import write_imagefolder, write_voc

DIGITS = str(ROOT / "configs/cls/digits.yaml")
OUTPUT_NAMES = ("out", "dir", "json", "storage", "report")  # and any field ending _out, _dir, _json, _file, _path


def _looks_like_output(name: str) -> bool:
    return name in OUTPUT_NAMES or name.endswith(("_out", "_dir", "_json", "_file", "_path"))


@pytest.fixture(scope="module")
def places(trained_digits, tmp_path_factory):
    """Inputs every command needs, and the bad destinations."""
    tmp = tmp_path_factory.mktemp("outputs")
    voc = write_voc(tmp / "voc", [("a1", "train", [("cell", [2, 3, 20, 30])]), ("b1", "val", [("cell", [1, 1, 9, 9])])])
    folder = tmp / "imgs"
    write_imagefolder(folder, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    png = tmp / "x.png"
    Image.new("RGB", (16, 16)).save(png)
    space = tmp / "space.yaml"
    space.write_text("optim.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    foreign = tmp / "thesis"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("do not lose me")
    others = {}  # other runs' folders: a pipeline's, and a tune study's for the pipeline command
    for kind in ("pipeline", "tune"):
        others[kind] = tmp / f"other_{kind}"
        others[kind].mkdir()
        (others[kind] / MARKER).write_text(json.dumps({"kind": kind}))
        (others[kind] / "report.md").write_text("x")
    return {"run": trained_digits, "voc": voc, "folder": folder, "png": png, "space": space, "foreign": foreign,
            "others": others, "tmp": tmp}


# command, field -> (kind of destination, argv for a destination)
TABLE = {
    ("train", "run.dir"): ("folder", lambda p, d: ["train", DIGITS, f"run.dir={d}", "--no-progress"]),
    ("tune", "dir"): ("folder", lambda p, d: ["tune", DIGITS, "--space", str(p["space"]), "--dir", d]),
    ("tune", "storage"): ("place", lambda p, d: ["tune", DIGITS, "--space", str(p["space"]), "--dir",
                                                 str(p["tmp"] / "study"), "--storage", f"sqlite:///{d}"]),
    ("pipeline", "dir"): ("folder", lambda p, d: ["pipeline", str(ROOT / "recipes/quickstart.yaml"), "--dir", d]),
    ("export", "out"): ("file", lambda p, d: ["export", str(p["run"]), "--format", "onnx", "--out", d]),
    ("export", "out:triton"): ("folder", lambda p, d: ["export", str(p["run"]), "--format", "triton", "--out", d]),
    ("export", "out:tensorrt"): ("file", lambda p, d: ["export", str(p["run"]), "--format", "tensorrt", "--out", d]),
    ("export", "out:executorch"): ("file", lambda p, d: ["export", str(p["run"]), "--format", "executorch",
                                                        "--out", d]),
    ("predict", "out"): ("folder", lambda p, d: ["predict", str(p["run"]), str(p["png"]), "--out", d]),
    ("predict", "coco_json"): ("file", lambda p, d: ["predict", str(p["run"]), str(p["png"]), "--coco-json", d]),
    ("eval", "json"): ("file", lambda p, d: ["eval", str(p["run"]), "--json", d]),
    ("bench", "json"): ("file", lambda p, d: ["bench", str(p["run"]), "--json", d, "--runs", "20"]),
    ("data inspect", "out"): ("folder", lambda p, d: ["data", "inspect", str(p["folder"]), "--out", d]),
    ("data clean", "out"): ("folder", lambda p, d: ["data", "clean", str(p["folder"]), "--out", d]),
    ("data convert", "out"): ("folder", lambda p, d: ["data", "convert", "voc2coco", str(p["voc"]), "--out", d]),
}
SUFFIX = {"out": ".onnx", "out:tensorrt": ".engine", "out:executorch": ".pte"}


def _bad(kind: str, key: tuple[str, str], p: dict) -> list[tuple[str, str]]:
    """(destination, what the message says) for a destination kind."""
    field = key[1]
    suffix = SUFFIX.get(field, ".json")
    other = p["others"]["tune" if key[0] == "pipeline" else "pipeline"]
    places = [("/", "is the file system root"), (str(Path.home()), "is the home folder"),
              ("/usr/r1-guard-test" + (suffix if kind != "folder" else ""), "inside the system folder /usr"),
              ("/proc/r1-guard-test" + (suffix if kind != "folder" else ""), "inside the system folder /proc"),
              ("/etc", "is a system folder")]
    if kind == "folder":
        return places + [(str(p["run"]), ("another R1 run's folder (a train folder)", "already holds a run")),
                         (str(other), "another R1 run's folder (a "),
                         (str(p["foreign"]), "is not empty (1 entry: thesis.tex) and R1 did not create it")]
    if kind == "file":
        theirs, folder = p["tmp"] / "theirs" / f"theirs{suffix}", p["tmp"] / f"a_folder{suffix}"
        theirs.parent.mkdir(exist_ok=True)
        theirs.write_text("theirs")
        folder.mkdir(exist_ok=True)
        return places + [(str(theirs), "exists and R1 did not write it"), (str(folder), "is a folder")]
    return places[2:4]


def test_every_output_option_is_in_the_table():
    import r1.cli  # noqa: F401  (registers every command)
    from r1.cli.build import REGISTERED

    found = {(path, name) for path, cmd in REGISTERED.items()
             for name in cmd.settings_class().__dataclass_fields__ if _looks_like_output(name)}
    covered = {(c, f.split(":")[0]) for c, f in TABLE}
    missing = sorted(found - covered)
    assert not missing, f"commands with an output option but no row in TABLE (and maybe no guard): {missing}"
    assert {c for c, _ in TABLE} <= set(REGISTERED)


@pytest.mark.parametrize("key", sorted(TABLE), ids=lambda k: "-".join(k).replace(" ", "_"))
def test_every_output_option_refuses_the_same_bad_destinations(places, key):
    kind, argv = TABLE[key]
    before = sorted(p.name for p in places["foreign"].iterdir())
    for dest, message in _bad(kind, key, places):
        proc = run_cli(*argv(places, dest))
        assert proc.returncode == 2, (key, dest, proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, (key, dest, proc.stderr)
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith("error: ") and any(m in line for m in (message if isinstance(message, tuple)
                                                                       else (message,))), (key, dest, line)
        assert len(proc.stderr.strip().splitlines()) == 1, (key, dest, proc.stderr)
    assert sorted(p.name for p in places["foreign"].iterdir()) == before  # nothing written there
    assert all(f.read_text() == "theirs" for f in (places["tmp"] / "theirs").glob("*"))
    assert not Path("/usr/r1-guard-test").exists() and not list(Path("/").glob("tune.db"))
    assert not any(p.name.startswith("r1-guard-test") for p in Path("/usr").iterdir())


# ----------------------------------------------------------------------------- R1's own outputs stay usable
def test_rerunning_into_r1_outputs_works(trained_digits, tmp_path):
    png = tmp_path / "x.png"
    Image.new("RGB", (16, 16)).save(png)
    drawn = tmp_path / "drawn"
    (drawn / "notes").mkdir(parents=True)  # a folder R1 did not create ...
    proc = run_cli("predict", str(trained_digits), str(png), "--out", str(drawn))
    assert proc.returncode == 2 and "R1 did not create it" in proc.stderr
    (drawn / "notes").rmdir()  # ... an empty one it takes, marks, and takes again
    for _ in range(2):
        assert run_cli("predict", str(trained_digits), str(png), "--out", str(drawn)).returncode == 0
    assert json.loads((drawn / MARKER).read_text())["kind"] == "predict"
    metrics = tmp_path / "m.json"
    for _ in range(2):  # R1 wrote it: a re-run replaces it
        proc = run_cli("eval", str(trained_digits), "--json", str(metrics))
        assert proc.returncode == 0, proc.stderr
    metrics.write_text(metrics.read_text() + " ")  # changed since: not R1's alone any more
    proc = run_cli("eval", str(trained_digits), "--json", str(metrics))
    assert proc.returncode == 2 and "exists and R1 did not write it" in proc.stderr


def test_rules_directly(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^--out: / is the file system root; choose"):
        check_folder("/", "--out", "predict")
    with pytest.raises(ConfigError, match=r"^--out: /var/lib/x is inside the system folder /var; choose"):
        check_folder("/var/lib/x", "--out", "predict")
    check_folder("/var/tmp/r1-x", "--out", "predict")  # scratch space is fine
    check_file("/tmp/r1-guard-x.json", "--json")
    monkeypatch.chdir("/usr")  # the current folder, inside a system folder, is the user's choice ...
    with pytest.raises(ConfigError, match="is inside the system folder /usr"):  # ... only when it is not /usr itself
        check_folder("share/x", "--out", "predict")
    monkeypatch.chdir(tmp_path)
    study = output_folder(tmp_path / "study", "--dir", "tune")
    (study / "tune.db").write_text("x")
    with pytest.raises(ConfigError, match="another R1 run's folder .a tune folder.; choose a new or empty folder for "
                                          "this train output"):
        check_folder(study, "run.dir", "train")
    done = output_folder(tmp_path / "conv", "--out", "convert", fresh=True)
    (done / "images").mkdir()
    with pytest.raises(ConfigError, match="holds an earlier convert output"):
        check_folder(done, "--out", "convert", fresh=True)
    f = tmp_path / "a.json"
    f.write_text("1")
    assert not written_by_r1(f)
    record_file(f)
    assert written_by_r1(f) and check_file(f, "--json") == f
    os.utime(f, ns=(1, 1))
    assert not written_by_r1(f)
