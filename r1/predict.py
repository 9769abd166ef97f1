"""Prediction on input files (what `r1 predict` runs).

`predict_files` loads any artifact (run dir, .safetensors, .onnx, TensorRT engine) with the one
loader, `r1.load`, reads the files with the model's input kind (`r1.input_kinds`) and yields one
JSON record per input file; visual results are drawn into `out_dir`.
"""
from __future__ import annotations

from pathlib import Path

from r1.family import get_family
from r1.inference import Predictor, artifact_info
from r1.input_kinds import get_input_kind
from r1.outputs import output_folder


def predict_files(model_path, paths: list[Path], out_dir: Path | None = None, top_k: int = 3,
                  batch_size: int = 16, runtime: str | None = None, threads: int = 1,
                  draw_options: dict | None = None, input_options: dict | None = None, **options):
    """Yield one record per file: {"file": ..., <family fields>}; with `out_dir`, visual results are
    drawn there as <file stem>.png (`draw_options` go to the family's drawer, `options` to its
    post-processing). `input_options` go to the input kind (e.g. an image+text model's `question`)."""
    predictor = Predictor.load(model_path, runtime=runtime, threads=threads)
    kind = get_input_kind(predictor.inputs)
    given = {k: v for k, v in (input_options or {}).items() if v is not None}
    kind.check_options(str(model_path), given)
    draw = getattr(getattr(predictor, "io", None), "draw", None)
    if out_dir is not None:  # the output-folder rules (r1/outputs.py): created and marked as R1's
        out_dir = output_folder(out_dir, "--out", "predict")
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        inputs = kind.read_files(str(model_path), chunk, given)
        for path, result in zip(chunk, predictor.predict(inputs, top_k=top_k, batch_size=batch_size, **options)):
            rec = kind.file_record(Path(path), result.to_json(), given)
            if out_dir is not None and draw is not None:
                rec["drawn"] = str(result.save(out_dir / f"{Path(path).stem}.png", **(draw_options or {})))
            yield rec


def write_results(model_path, records: list[dict], fmt: str, path: Path) -> Path:
    """Records of `predict_files` in another format the model's family writes (e.g. "coco")."""
    info = artifact_info(model_path)
    return get_family(info["family"]).writer(fmt)(info, records, path)
