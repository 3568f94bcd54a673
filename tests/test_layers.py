"""The package layering of docs/ARCHITECTURE.md, read from the source with `ast`: no package imports one it may not
(a higher layer, or one its row of the diagram does not name) and no module imports itself through a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Which of our packages each package may import: the diagram of docs/ARCHITECTURE.md.
MAY_IMPORT = {
    "ui": {"app"},
    "app": {"reasoning", "memory", "tools", "model"},
    "reasoning": {"tools", "model"},
    "memory": set(),
    "tools": set(),
    "model": set(),
}
# The stated exception (docs/ARCHITECTURE.md): the OpenAI wire format, which r1 serve (ui) answers in and the
# remote backend (model) speaks, lives once, below both.
EXCEPTIONS = {
    ("ui.server", "model.backends.openai_protocol"),
    ("ui.http_guard", "model.backends.openai_protocol"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    return {module_name(path): path for package in MAY_IMPORT for path in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Our modules that `path` imports anywhere in it (top level, in functions, under TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = our_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def test_no_package_imports_one_its_layer_may_not():
    wrong = sorted(
        f"{source} imports {target}"
        for source, targets in import_graph().items()
        for target in targets
        if (top := target.split(".")[0]) != source.split(".")[0]
        and top not in MAY_IMPORT[source.split(".")[0]]
        and (source, target) not in EXCEPTIONS
    )
    assert wrong == []


def test_the_stated_exceptions_are_still_needed():
    graph = import_graph()
    assert sorted(pair for pair in EXCEPTIONS if pair[1] not in graph.get(pair[0], ())) == []


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle a depth-first walk meets, each as the modules along it, first repeated last."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                found.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    return found


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_circles():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert circles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_checker_sees_imports_of_every_form(tmp_path):
    """The reader itself: absolute, from-module, from-package-of-a-module and relative imports all count."""
    modules = {"pkg": tmp_path, "pkg.a": tmp_path, "pkg.b": tmp_path, "pkg.sub.c": tmp_path, "other.d": tmp_path}
    source = tmp_path / "a.py"
    source.write_text(
        "import other.d\nfrom pkg import b\nfrom .sub.c import x\n\ndef f():\n    from pkg.sub.c import y\n"
    )
    assert imports_of(source, "pkg.a", modules) == {"other.d", "pkg.b", "pkg.sub.c"}
