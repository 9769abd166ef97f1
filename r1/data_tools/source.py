"""Which dataset `r1 data` looks at: a config's data section, or a folder whose layout is detected."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from r1.errors import DataError

KINDS = ("imagefolder", "voc", "coco", "digits", "text")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TEXT_EXTS = (".txt", ".md", ".text", ".jsonl")


@dataclass
class Source:
    """`kind` one of KINDS; `root` the folder or file; `options` the data section's other fields."""
    kind: str
    root: Path | None
    options: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.kind} {self.root}" if self.root else self.kind


def _coco_layout(root: Path) -> bool:
    return any((root / "annotations").glob("instances_*.json"))


def detect(path: Path) -> str:
    """The layout of a folder or file (DataError naming what was expected when none fits)."""
    if path.is_file():
        if path.suffix == ".json":
            return "coco"
        if path.suffix in TEXT_EXTS:
            return "text"
        raise DataError(f"{path}: not a dataset file (expected a COCO .json or a text file {', '.join(TEXT_EXTS)})")
    if not path.is_dir():
        raise DataError(f"{path}: no such file or directory")
    if (path / "Annotations").is_dir() and (path / "ImageSets" / "Main").is_dir():
        return "voc"
    if _coco_layout(path):
        return "coco"
    subdirs = [d for d in path.iterdir() if d.is_dir()]
    if subdirs:
        return "imagefolder"
    if any(p.suffix in TEXT_EXTS for p in path.iterdir()):
        return "text"
    raise DataError(f"{path}: layout not recognised; expected an ImageFolder (<class>/<images> or "
                    "train|val|test/<class>/<images>), VOC (Annotations/, ImageSets/Main/), COCO "
                    "(annotations/instances_<split>.json) or text files")


def _from_config(path: Path) -> Source:
    from r1.config import read_yaml

    data = read_yaml(path).get("data") or {}
    name = data.get("name", "")
    if name == "digits":
        return Source("digits", None, data)
    if name in ("imagefolder", "voc", "coco"):
        root = data.get("root") or ""
        if not root:
            raise DataError(f"{path}: data.root is empty; pass the dataset folder instead of the config")
        return Source(name, Path(root), data)
    if data.get("path"):
        return Source("text", Path(data["path"]), data)
    raise DataError(f"{path}: data.name={name!r} is not a kind `r1 data` reads; allowed: digits, imagefolder, "
                    "voc, coco, or a text kind with data.path (generated scenes such as det_digits have nothing to inspect)")


def resolve(target: str) -> Source:
    """A YAML config (its data section) or a dataset folder/file (layout detected)."""
    path = Path(target)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise DataError(f"{path}: config not found")
        return _from_config(path)
    return Source(detect(path), path)
