"""`r1 data clean`: a cleaned copy of a dataset in a new folder, and clean_report.json saying what
was dropped and why. The source is never modified (image files are hard-linked or copied).

Images: unreadable files, duplicates within a split (the later copy goes), and cross-split leaks
(the training copy goes; between val and test, the val copy). Text: the corpus cleaner's length
filters and exact/near dedupe, then optionally the perplexity filter of a small R1 language model.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from r1.data_tools.convert import place, write_coco, write_voc
from r1.data_tools.inspect import NEAR_DISTANCE, documents, duplicate_pairs, read_text
from r1.data_tools.scan import ImageSet, read_images
from r1.data_tools.source import Source
from r1.errors import ConfigError
from r1.outputs import check_folder, output_folder

log = logging.getLogger(__name__)
SPLIT_RANK = {"train": 0, "val": 1, "test": 2}  # of two leaked copies, the lower-ranked one is dropped


def _check_out(source: Source, out: Path) -> None:
    """Not the source or inside it; then the output-folder rules (r1/outputs.py): a new or empty folder."""
    if source.root is not None:
        src = source.root.resolve()
        if out.resolve() == src or src in out.resolve().parents:
            raise ConfigError(f"--out: {out} is the source or inside it; choose a new folder outside the source "
                              "(the source is never modified)")
    check_folder(out, "--out", "clean", fresh=True)


def image_drops(images: ImageSet, max_distance: int = NEAR_DISTANCE) -> dict[int, str]:
    """record index -> why it is dropped."""
    drop = {i: f"corrupt ({r.error})" for i, r in enumerate(images.records) if r.error}
    for i, j, kind in duplicate_pairs(images, max_distance):
        if i in drop or j in drop:
            continue  # one copy is already gone: the other stays
        a, b = images.records[i], images.records[j]
        if a.split == b.split:
            drop[j] = f"{kind} duplicate of {a.name}"
        else:
            lose, keep = (i, b) if SPLIT_RANK.get(a.split, 0) <= SPLIT_RANK.get(b.split, 0) else (j, a)
            drop[lose] = f"{kind} duplicate of {keep.name} in {keep.split} (cross-split leak)"
    return drop


def clean_images(source: Source, out: Path, max_distance: int = NEAR_DISTANCE) -> dict:
    images = read_images(source)
    drop = image_drops(images, max_distance)
    kept = [r for i, r in enumerate(images.records) if i not in drop]
    output_folder(out, "--out", "clean", fresh=True)
    if source.kind == "imagefolder":
        for r in kept:
            place(r.path, out / r.path.relative_to(source.root))
    elif source.kind == "voc":
        write_voc(kept, out)
    elif source.kind == "coco":
        write_coco(kept, images.classes, out)
    else:  # in-memory images (digits): an index of what to keep
        (out / "keep_index.json").write_text(json.dumps(
            {s: [r.meta["index"] for r in kept if r.split == s] for s in dict.fromkeys(r.split for r in kept)}))
    reasons = Counter("corrupt" if why.startswith("corrupt") else "cross-split leak" if "leak" in why
                      else "duplicate" for why in drop.values())
    return {"source": source.describe(), "out": str(out), "kept": len(kept), "dropped": len(drop),
            "dropped_by_reason": dict(reasons), "outside_root_skipped": len(images.outside),
            "dropped_items": [{"item": images.records[i].name, "split": images.records[i].split, "why": why}
                              for i, why in sorted(drop.items())]}


def load_reference_lm(run: str):
    """(model in eval mode, tokenizer, block size) of a language-model run dir or model.safetensors."""
    import r1
    from r1.artifacts import read_info

    family = read_info(run).get("family")
    predictor = r1.load(run, runtime="torch")
    if getattr(predictor, "tokenizer", None) is None:
        raise ConfigError(f"--lm {run}: a {family} model; the perplexity filter needs a language model")
    return predictor.model, predictor.tokenizer, int(predictor.block_size)


def clean_text(source: Source, out: Path, unit: str = "auto", dedup: str = "near", threshold: float = 0.95,
               lm: str = "", max_ppl: float = 0.0, drop_share: float = 0.0) -> dict:
    from r1.data_tools.text_clean import clean_docs, perplexities, perplexity_keep

    if (max_ppl > 0 or drop_share > 0) and not lm:
        raise ConfigError("--max-ppl/--drop-share: need --lm RUN (the language model that scores the text)")
    if lm and not (max_ppl > 0 or 0 < drop_share < 1):
        raise ConfigError("--lm: give --max-ppl P (> 0) or --drop-share S (in (0, 1)) to say what to drop")
    docs, used = documents(read_text(source), unit)
    kept, rep = clean_docs(docs, dedup=dedup, threshold=threshold)
    result = {"source": source.describe(), "unit": used, "docs_in": rep.docs_in, "exact_duplicates": rep.exact_dups,
              "near_duplicates": rep.near_dups}
    if lm:
        import torch
        model, tok, block = load_reference_lm(lm)
        with torch.inference_mode():
            scores = perplexities(kept, model, tok, block)
        keep = perplexity_keep(scores, max_ppl, drop_share)
        dropped = [(s, d) for s, d, k in zip(scores, kept, keep) if not k]
        result["perplexity"] = {"lm": lm, "max_ppl": max_ppl, "drop_share": drop_share, "dropped": len(dropped),
                                "median_kept": _median([s for s, k in zip(scores, keep) if k]),
                                "examples": [{"ppl": round(s, 1), "text": d[:80]} for s, d in sorted(dropped)[-5:]]}
        kept = [d for d, k in zip(kept, keep) if k]
    result["docs_out"] = len(kept)
    result["dropped"] = rep.docs_in - len(kept)
    name = source.root.name if source.root.is_file() else "corpus.txt"
    output_folder(out, "--out", "clean", fresh=True)
    (out / name).write_text(("\n" if used == "line" else "\n\n").join(kept) + "\n", encoding="utf-8")
    result["out"] = str(out / name)
    return result


def _median(values: list[float]) -> float | None:
    import numpy as np
    v = [x for x in values if x == x]
    return round(float(np.median(v)), 2) if v else None


def clean(source: Source, out: Path, max_distance: int = NEAR_DISTANCE, **text_options) -> dict:
    """`text_options`: see clean_text (ignored for images)."""
    _check_out(source, out)
    result = (clean_text(source, out, **text_options) if source.kind == "text"
              else clean_images(source, out, max_distance))
    (out / "clean_report.json").write_text(json.dumps(result, indent=1))
    log.info("%s: kept %s, dropped %s", source.describe(), result.get("kept", result.get("docs_out")),
             result["dropped"])
    return result
