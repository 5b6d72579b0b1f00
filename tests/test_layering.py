"""The house's layering, read from the source with ``ast`` (every import, also those inside functions).

spec.py sits at the bottom without torch; edit/ (spec surgery, weight carry) sits below builder/ and
analysis/, which never import each other; the engine's package never imports its plug-ins; only the
command line imports the command line; and no import circle joins two parts of the package.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import reslab

ROOT = Path(reslab.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, as absolute names (``from . import x`` counts as ``package.x``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            out.add(target)
            if node.module is None:  # from . import a, b: the modules a and b
                out.update(f"{target}.{alias.name}" for alias in node.names)
    return out


GRAPH = {module_name(p): imports(p) for p in ROOT.rglob("*.py")}


def part(module: str) -> str:
    """The room of a module: ``reslab.builder.hook`` -> ``builder``, ``reslab.spec`` -> ``spec``."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "reslab"


def parts_imported_by(room: str) -> dict[str, set[str]]:
    """For every module of ``room``, the other rooms of reslab it imports."""
    out = defaultdict(set)
    for module, targets in GRAPH.items():
        if part(module) == room and module != "reslab":
            out[module] |= {part(t) for t in targets if t.startswith("reslab.")} - {room}
    return out


def assert_imports_none(room: str, forbidden: set[str]) -> None:
    bad = {m: sorted(rooms & forbidden) for m, rooms in parts_imported_by(room).items() if rooms & forbidden}
    assert not bad, f"{room}/ imports what it must not: {bad}"


def test_the_parser_sees_relative_and_lazy_imports() -> None:
    # A layering test that saw no imports would pass on anything: check it reads the known ones.
    assert "reslab.edit.surgery" in GRAPH["reslab.builder.schedule"]
    assert "reslab.train.distributed" in GRAPH["reslab.train.engine"]  # from . import distributed
    assert "reslab.train.plugins" in GRAPH["reslab.builder.cli"]  # inside cmd_build
    assert parts_imported_by("builder")["reslab.builder.hook"] >= {"edit", "train"}
    assert "reslab.schema" in GRAPH["reslab.data.config"]


def test_spec_and_config_schema_are_plain_python() -> None:
    """spec.py, schema.py (every config section's machinery) and whatever of reslab they import need no torch."""
    seen, todo = set(), ["reslab.spec", "reslab.schema"]
    while todo:
        module = todo.pop()
        if module in seen or module not in GRAPH:
            continue
        seen.add(module)
        heavy = sorted(t for t in GRAPH[module] if t.split(".")[0] in ("torch", "torchvision", "numpy"))
        assert not heavy, f"{module} (imported by reslab.spec or reslab.schema) imports {heavy}"
        todo.extend(t for t in GRAPH[module] if t.startswith("reslab."))


def test_edit_sits_below_builder_analysis_and_train() -> None:
    assert_imports_none("edit", {"builder", "analysis", "train", "cli"})


def test_builder_and_analysis_import_edit_never_each_other_nor_the_cli() -> None:
    assert_imports_none("builder", {"analysis", "cli"})
    assert_imports_none("analysis", {"builder", "cli"})
    assert not any("reslab.builder.surgery" in t or "reslab.builder.channels" in t for t in GRAPH.values())


def test_the_engine_never_imports_its_plugins() -> None:
    assert_imports_none("train", {"builder", "analysis", "cli"})


def test_no_import_circle_between_rooms() -> None:
    edges = defaultdict(set)
    for module, targets in GRAPH.items():
        if module == "reslab":  # the package's front door re-exports from below; it is no room
            continue
        edges[part(module)] |= {part(t) for t in targets if t.startswith("reslab.") and part(t) != part(module)}
    state: dict[str, str] = {}

    def visit(room: str, path: list[str]) -> None:
        state[room] = "open"
        for target in sorted(edges[room]):
            assert state.get(target) != "open", f"import circle: {' -> '.join([*path, target])}"
            if target not in state:
                visit(target, [*path, target])
        state[room] = "done"

    for room in sorted(edges):
        if room not in state:
            visit(room, [room])
