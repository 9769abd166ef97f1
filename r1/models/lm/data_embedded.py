"""The lm family's embedded default: text that ships with Python itself.

* `pydoc_topic_docs()`: the documentation topics of `pydoc_data.topics` (pretraining corpus).
* `stdlib_docstrings()`: docstrings of a fixed list of standard-library modules (domain adaptation).
* `instruction_pairs()`: question/answer pairs built from topic titles and first paragraphs, and from
  module/function names and the first paragraph of their docstrings (instruction tuning).
"""
from __future__ import annotations

import importlib
import inspect
import re
import warnings

# Pure-Python, side-effect-free modules, in a fixed order so the corpus is the same everywhere.
STDLIB_MODULES = (
    "abc", "argparse", "base64", "bisect", "calendar", "collections", "colorsys", "contextlib", "copy",
    "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "fnmatch", "fractions", "functools",
    "glob", "gzip", "hashlib", "heapq", "hmac", "html", "inspect", "ipaddress", "itertools", "json",
    "logging", "numbers", "operator", "os", "pathlib", "pprint", "queue", "random", "re", "secrets",
    "shlex", "shutil", "statistics", "string", "struct", "tarfile", "tempfile", "textwrap", "threading",
    "timeit", "tokenize", "traceback", "types", "typing", "unittest", "urllib.parse", "uuid", "warnings",
    "weakref", "zipfile",
)


def _topics() -> dict[str, str]:
    from pydoc_data.topics import topics
    return topics


def _split_title(text: str) -> tuple[str, str]:
    """A topic starts with a title line underlined by '*' or '='; returns (title, body)."""
    lines = text.strip("\n").split("\n")
    if len(lines) > 1 and lines[1] and set(lines[1]) <= {"*", "=", "-"}:
        return lines[0].strip(), "\n".join(lines[2:]).strip("\n")
    return "", text.strip("\n")


def _first_paragraph(body: str, max_chars: int = 600) -> str:
    para = re.split(r"\n\s*\n", body.strip(), maxsplit=1)[0]
    para = " ".join(para.split())
    return para[:max_chars].rsplit(" ", 1)[0] + " ..." if len(para) > max_chars else para


def pydoc_topic_docs() -> list[str]:
    topics = _topics()
    return [topics[k] for k in sorted(topics)]


def _docstrings(modname: str):
    """(qualified name, docstring) of a module and its public functions, classes and methods."""
    mod = importlib.import_module(modname)
    if mod.__doc__:
        yield modname, mod.__doc__
    for name, obj in sorted(vars(mod).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            if obj.__doc__:
                yield f"{modname}.{name}", obj.__doc__
            if inspect.isclass(obj):
                for mname, meth in sorted(vars(obj).items()):
                    if not mname.startswith("_") and inspect.isfunction(meth) and meth.__doc__:
                        yield f"{modname}.{name}.{mname}", meth.__doc__


def stdlib_entries() -> list[tuple[str, str]]:
    out = []
    with warnings.catch_warnings():  # reading attributes such as typing.re warns; not our concern
        warnings.simplefilter("ignore", DeprecationWarning)
        for modname in STDLIB_MODULES:
            try:
                out += [(n, inspect.cleandoc(d)) for n, d in _docstrings(modname)]
            except ImportError:  # a module missing from a trimmed Python: the corpus just shrinks
                continue
    return out


def stdlib_docstrings(min_chars: int = 40) -> list[str]:
    return [f"{name}\n\n{doc}" for name, doc in stdlib_entries() if len(doc) >= min_chars]


def instruction_pairs() -> list[dict[str, str]]:
    """{"instruction", "response"} pairs; deterministic."""
    pairs = []
    for key in sorted(_topics()):
        title, body = _split_title(_topics()[key])
        answer = _first_paragraph(body)
        if title and len(answer) >= 20:
            pairs.append({"instruction": f"What does the Python reference say about {title}?", "response": answer})
    for name, doc in stdlib_entries():
        answer = _first_paragraph(doc, 300)
        if len(answer) >= 20:
            pairs.append({"instruction": f"What does {name} do?", "response": answer})
    return pairs
