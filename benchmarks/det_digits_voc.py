"""Write the embedded digit scenes as a VOC folder (JPEGImages/, Annotations/, ImageSets/Main/), so that
a VOC recipe tuned elsewhere (configs/det/bccd.yaml) can be checked unchanged but for `data.root`
on data it was never tuned on (issue 16).

    python benchmarks/det_digits_voc.py OUT [--train 300 --val 100 --test 100 --canvas 320]
    r1 train configs/det/bccd.yaml data.root=OUT run.threads=1
"""
from __future__ import annotations

import argparse
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image

from r1.config import load_config
from r1.data import build_data

ROOT = Path(__file__).resolve().parents[1]


def voc_xml(name: str, w: int, h: int, objects: list[tuple[str, list[float]]]) -> str:
    objs = "".join(
        f"<object><name>{escape(c)}</name><difficult>0</difficult><bndbox><xmin>{b[0]:.0f}</xmin>"
        f"<ymin>{b[1]:.0f}</ymin><xmax>{b[2]:.0f}</xmax><ymax>{b[3]:.0f}</ymax></bndbox></object>"
        for c, b in objects)
    return (f"<annotation><filename>{name}.jpg</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{objs}</annotation>\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--canvas", type=int, default=320)
    args = ap.parse_args()
    c = args.canvas
    cfg = load_config(ROOT / "configs/det/digits.yaml", [
        f"data.num_train={args.train}", f"data.num_val={args.val}", f"data.num_test={args.test}",
        f"data.canvas={c}", f"data.size={c}", f"data.digit_min={c // 8}", f"data.digit_max={c // 3}"])
    bundle = build_data(cfg.data, cfg.run.seed)
    classes = bundle.meta["classes"]
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    for split, ds in (("train", bundle.train), ("val", bundle.val), ("test", bundle.test)):
        names = []
        for i, rec in enumerate(ds.records):
            name = f"{split}_{i:05d}"
            Image.fromarray(ds.load(i).permute(1, 2, 0).numpy()).save(args.out / "JPEGImages" / f"{name}.jpg", quality=95)
            objs = [(classes[int(lab)], box.tolist()) for box, lab in zip(rec.boxes, rec.labels)]
            (args.out / "Annotations" / f"{name}.xml").write_text(voc_xml(name, c, c, objs))
            names.append(name)
        (args.out / "ImageSets/Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
        print(f"{split}: {len(names)} images")


if __name__ == "__main__":
    main()
