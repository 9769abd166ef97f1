"""`Result`: one prediction, the family's JSON-safe record with attribute access, drawing and saving.

    r = r1.load("runs/det_digits").predict(["examples/digit-scene.png"])[0]   # a DetectionsResult
    r.boxes, r.scores, r.labels            # the record's fields as attributes (r["boxes"] works too)
    r.to_json()                            # the record as the server sends it: dict(r) is the same
    r.save("drawn.png"); r.plot()          # families that draw

A Result *is* its record (a dict subclass holding exactly the record's keys), so `dict(r)`, `r.to_json()`,
`json.dumps(r)` and the HTTP server's `result` are unchanged. Each family gets its own subclass, made
from the pydantic model of its record (`FamilySpec.schema`): `ClassificationResult` (r.label, r.score,
r.class_id, r.top), `DetectionsResult` (r.boxes, r.scores, r.class_ids, r.labels), `GenerationResult`
(r.text, r.finish_reason, ...), `AnswerResult` (r.answer, r.probability, r.top_k). Nested records read
the same way: `r.top[0].label`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from PIL import Image

from r1.errors import ConfigError


class Record(dict):
    """A JSON-safe dict whose keys read as attributes too; nested records and lists of them as well."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return _view(self[name])
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}; fields: "
                                 f"{', '.join(self) or 'none'}") from None

    def __dir__(self):
        return sorted(set(super().__dir__()) | {k for k in self if isinstance(k, str) and k.isidentifier()})


def _view(value: Any) -> Any:
    """Nested dicts as Records (copies: the stored record stays plain), lists of them likewise."""
    if isinstance(value, dict) and not isinstance(value, Record):
        return Record(value)
    if isinstance(value, list):
        return [_view(v) for v in value]
    return value


class Result(Record):
    """One prediction: the family's JSON-safe record (a dict, with attribute access), plus `to_json()`
    and, for families that draw, `save(path)` / `plot()` of the record on its input image."""

    schema: Any = None  # the family's pydantic record model (its fields: the attributes documented)

    def __init__(self, record: dict, image=None, draw: Callable | None = None, meta: dict | None = None):
        super().__init__(record)
        object.__setattr__(self, "_extra", (image, draw, meta))

    __slots__ = ("_extra",)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"

    def __reduce__(self):  # pickles (to a worker process and back) as its record and its schema's name
        schema = type(self).schema
        return (_rebuild, (f"{schema.__module__}:{schema.__qualname__}" if schema is not None else "", dict(self)))

    def to_json(self) -> dict:
        return dict(self)

    def save(self, path: str | Path, **options) -> Path:
        """Draw this result on its input image and save it (PNG); options go to the family's drawer
        (e.g. `score_thresh` for detections)."""
        image, draw, meta = getattr(self, "_extra", (None, None, None))
        if draw is None or image is None:
            raise ConfigError("save: this result has no picture (its family does not draw, or the input was not an image)")
        path = Path(path)
        draw(image, dict(self), meta, path, **options)
        return path

    def plot(self, **options):
        """The drawn result as a PIL image (e.g. to show in a notebook)."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            with Image.open(self.save(Path(tmp) / "result.png", **options)) as im:
                return im.copy()


_TYPED: dict[Any, type[Result]] = {}


def result_class(schema: Any) -> type[Result]:
    """The Result subclass of a family's record model: `<Model>Result`, one documented property per
    field (its description from the schema), so `help(r)` and editors list what a result holds."""
    if schema is None:
        return Result
    if schema not in _TYPED:
        fields = getattr(schema, "model_fields", {})
        ns: dict[str, Any] = {"__doc__": f"{schema.__name__} record (`{schema.__module__}`): "
                                         + ", ".join(f"r.{n}" for n in fields) + ".",
                              "__module__": __name__, "schema": schema, "__slots__": ()}
        for name, f in fields.items():
            ns[name] = property(lambda self, n=name: Record.__getattr__(self, n), doc=f.description)
        _TYPED[schema] = type(f"{schema.__name__}Result", (Result,), ns)
    return _TYPED[schema]


def _rebuild(schema: str, record: dict) -> Result:
    if not schema:
        return Result(record)
    import importlib

    module, _, name = schema.partition(":")
    return result_class(getattr(importlib.import_module(module), name))(record)


def family_result(family: str) -> type[Result]:
    """The Result class of `family`'s predictions (plain `Result` for a family without a record schema)."""
    from r1.family import get_family

    spec = get_family(family)
    return result_class(spec.hook("schema") if spec.schema is not None else None)
