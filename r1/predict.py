"""Prediction on input files (what `r1 predict` runs).

`predict_files` loads any artifact (run dir, .safetensors, .onnx, TensorRT engine) with the one
loader, `r1.load`, and yields one JSON record per input file; visual results are drawn into
`out_dir`.
"""
from __future__ import annotations

from pathlib import Path

from r1.errors import ConfigError
from r1.family import get_family
from r1.inference import Predictor, artifact_info, open_image


def predict_files(model_path, paths: list[Path], out_dir: Path | None = None, top_k: int = 3,
                  batch_size: int = 16, runtime: str | None = None, threads: int = 1,
                  draw_options: dict | None = None, question: str | None = None, **options):
    """Yield one record per file: {"file": ..., <family fields>}; with `out_dir`, visual results are
    drawn there as <file stem>.png (`draw_options` go to the family's drawer, `options` to its
    post-processing). Image+text models answer `question` about each file."""
    predictor = Predictor.load(model_path, runtime=runtime, threads=threads)
    if predictor.inputs == "image+text":
        if not question:
            raise ConfigError(f"{model_path}: this model answers a question about each image; give --question TEXT")
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            pairs = [(open_image(p), question) for p in chunk]
            for path, result in zip(chunk, predictor.predict(pairs, top_k=top_k, batch_size=batch_size)):
                yield {"file": str(path), "question": question, **result.to_json()}
        return
    if question is not None:
        raise ConfigError(f"--question: {model_path} takes {predictor.inputs} inputs, not a question")
    if predictor.inputs != "image":
        hint = {"text": "; use `r1 generate`"}.get(predictor.inputs, "; use r1.load(...).predict in Python")
        raise ConfigError(f"{model_path}: this model takes {predictor.inputs} inputs, not image files alone{hint}")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        for path, result in zip(chunk, predictor.predict([open_image(p) for p in chunk], top_k=top_k,
                                                         batch_size=batch_size, **options)):
            rec = result.to_json()
            if out_dir is not None and predictor.io.draw is not None:
                target = result.save(out_dir / f"{Path(path).stem}.png", **(draw_options or {}))
                rec = {**rec, "drawn": str(target)}
            yield {"file": str(path), **rec}


def write_results(model_path, records: list[dict], fmt: str, path: Path) -> Path:
    """Records of `predict_files` in another format the model's family writes (e.g. "coco")."""
    info = artifact_info(model_path)
    return get_family(info["family"]).writer(fmt)(info, records, path)


