"""Static int8 candidates of one trained model, timed beside its float graph on this CPU.

    .venv/bin/python benchmarks/int8_choice.py RUN_DIR [--out-dir runs/int8_choice] [--batch-sizes 1 32]
        [--keep-float first last] [--tolerance 0.01] [--rounds 15]

The same choice the pipeline's `quantize` stage makes with `ops: auto` (r1/compress/int8_choice.py),
at the batch sizes given: every candidate's val metric and interleaved median latency per batch size;
then the chosen graph and the float graph scored on the test split. One thread, CPU flags printed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from r1.artifacts import read_info  # noqa: E402
from r1.compress.int8_choice import choice_markdown, choose_int8  # noqa: E402
from r1.compress.quantize import quantize_onnx  # noqa: E402
from r1.evaluate.artifact import evaluate_artifact  # noqa: E402
from r1.onnx.export import export_onnx  # noqa: E402
from r1.pipeline.verdict import cpu_summary  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="trained run dir")
    ap.add_argument("--out-dir", default="runs/int8_choice")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--keep-float", nargs="*", default=[])
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calib-batches", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / "fp32.onnx"
    export_onnx(args.run, fp32)
    data_cfg = read_info(args.run).get("data", {})

    def one(path: Path, all_ops: bool, keep: list[str]) -> Path:
        with torch.no_grad():
            return quantize_onnx(fp32, path, "static", data_cfg, args.calib_batches, keep, True, False, all_ops)

    record = choose_int8(fp32, out / "model.onnx", one, data_cfg, args.keep_float, args.tolerance,
                         tuple(args.batch_sizes), args.rounds)
    key = record["metric_key"].replace("val/", "test/")
    record["test"] = {"float": evaluate_artifact(fp32, "test")[key], record["chosen"]: evaluate_artifact(
        out / "model.onnx", "test")[key]}
    record["cpu"] = cpu_summary()
    (out / "int8_choice.json").write_text(json.dumps(record, indent=2))
    print(f"CPU: {record['cpu']['model']} ({', '.join(record['cpu']['flags'])})")
    print(choice_markdown(record, args.batch_sizes))
    print(f"test {key}: " + ", ".join(f"{k} {v:.4f}" for k, v in record["test"].items()))


if __name__ == "__main__":
    main()
