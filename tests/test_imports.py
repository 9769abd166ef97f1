"""The import graph of r1/ has no circles between files: every import counts, also those inside
functions (a deferred import that hides a circle is still a circle). Circles inside one file are fine."""
from __future__ import annotations

import ast

from tests.conftest import ROOT


def module_files() -> dict[str, object]:
    """Dotted module name -> path, for every .py file under r1/ (a package is its __init__.py)."""
    mods = {}
    for path in (ROOT / "r1").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imported(node: ast.AST, package: str, mods: dict) -> list[str]:
    """The dotted names an import statement reaches: `from a import b` reaches the module a.b when
    there is one, else the module a (b is a name defined in it)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join(up + ([base] if base else []))
    subs = [f"{base}.{a.name}" for a in node.names]
    return [s for s in subs if s in mods] + ([base] if any(s not in mods for s in subs) else [])


def import_graph() -> dict[str, set[str]]:
    mods = module_files()

    def owner(name: str) -> str | None:  # the r1 module that defines `name`
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            for name in _imported(node, package, mods):
                target = owner(name) if name == "r1" or name.startswith("r1.") else None
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_circles_between_files():
    found = circles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_families_use_other_families_only_through_declared_dependencies():
    """A family folder imports another family's modules only when its spec's `depends` names it."""
    from r1.family import get_family

    wrong = []
    for mod, targets in import_graph().items():
        parts = mod.split(".")
        if parts[:2] != ["r1", "models"] or len(parts) < 4:
            continue
        for target in targets:
            other = target.split(".")
            if other[:2] == ["r1", "models"] and len(other) > 2 and other[2] != parts[2] \
                    and other[2] not in get_family(parts[2]).depends:
                wrong.append(f"{mod} -> {target} (family {parts[2]} does not declare depends={other[2]!r})")
    assert not wrong, "\n".join(wrong)


def test_the_circle_finder_finds_a_circle():
    graph = {"r1.a": {"r1.b"}, "r1.b": {"r1.c"}, "r1.c": {"r1.a"}, "r1.d": {"r1.a"}}
    assert circles(graph) == [["r1.a", "r1.b", "r1.c"]]
