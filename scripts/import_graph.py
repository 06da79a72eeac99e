"""The package's shape: its modules, their imports, import circles, the longest function and module.

    python scripts/import_graph.py            # the module map and the counts
    python scripts/import_graph.py --json     # the same as one JSON object

Reads the source (``src/impresslearn``) with ``ast``; nothing is imported. An import counts
wherever it is written (also inside a function): a lazy import is still a dependency. An import
circle is a strongly connected group of more than one module (or a module importing itself);
``tests/test_layout.py`` asserts there are none.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

PACKAGE = "impresslearn"
ROOT = Path(__file__).resolve().parent.parent / "src" / PACKAGE


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (a name imported from a package counts as the
    submodule when there is one of that name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.startswith(PACKAGE) and name != this:
                found.add(name)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def graph_of_package() -> dict[str, set[str]]:
    """Module -> the package modules it imports. A package's ``__init__`` re-exports its
    submodules; an import of the package from inside it is not counted as a circle."""
    found = modules()
    known = set(found)
    graph = {}
    for name, path in found.items():
        targets = imports(path, known)
        # importing a parent package from a submodule runs the parent's __init__ first anyway
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    return graph


def longest_function(paths: dict[str, Path]) -> tuple[str, int]:
    best = ("", 0)
    for name, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > best[1]:
                    best = (f"{name}.{node.name}", length)
    return best


def summary() -> dict:
    paths = modules()
    graph = graph_of_package()
    lines = {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in paths.items()}
    longest = max(lines, key=lines.get)
    function, length = longest_function(paths)
    purpose = {}
    for name, path in paths.items():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        purpose[name] = doc.strip().splitlines()[0] if doc.strip() else ""
    return {
        "modules": {n: {"lines": lines[n], "purpose": purpose[n]} for n in paths},
        "import_circles": circles(graph),
        "longest_module": {"name": longest, "lines": lines[longest]},
        "longest_function": {"name": function, "lines": length},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = summary()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for name, info in result["modules"].items():
        print(f"{name:<40} {info['lines']:>4}  {info['purpose']}")
    print(f"import circles: {len(result['import_circles'])} {result['import_circles'] or ''}")
    m, f = result["longest_module"], result["longest_function"]
    print(f"longest module: {m['name']} ({m['lines']} lines)")
    print(f"longest function: {f['name']} ({f['lines']} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
