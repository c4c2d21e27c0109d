"""Processes meet only on the bus: no service imports another service, and the library
(anyclaude/) imports no service.

An AST walk rather than import-linter: it needs no extra dependency, sees imports inside
functions (the lazy ones are exactly where a crossing hides), resolves relative imports,
and runs in milliseconds.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = "anyclaude.services"


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "services":
        parts = ["anyclaude", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, root)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            # `from anyclaude.services import engine` names a service package too
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names
                      if base == SERVICES]
    return found


def owner(module: str) -> str | None:
    """The service a module belongs to (``engine`` for anyclaude.services.engine.mlx.model)."""
    if not module.startswith(SERVICES + "."):
        return None
    return module.split(".")[2]


def crossings(root: Path = ROOT) -> list[str]:
    bad = []
    files = [*root.joinpath("services").rglob("*.py"), *root.joinpath("anyclaude").rglob("*.py")]
    for path in sorted(files):
        here = owner(module_name(path, root))
        for line, target in imported_modules(path, root):
            there = owner(target)
            if there is not None and there != here:
                who = f"services/{here}" if here else "the library (anyclaude/)"
                bad.append(f"{path.relative_to(root)}:{line}: {who} imports {target}")
    return bad


def test_no_process_imports_another_and_the_library_imports_no_service():
    assert crossings() == []


def test_the_rule_sees_a_crossing(tmp_path):
    """The checker itself: a relative and an absolute crossing are both found."""
    fake = tmp_path
    (fake / "services" / "engine").mkdir(parents=True)
    (fake / "services" / "frontdoor").mkdir(parents=True)
    (fake / "anyclaude").mkdir()
    (fake / "services" / "engine" / "a.py").write_text(
        "def f():\n    from ..frontdoor import app\n")
    (fake / "services" / "frontdoor" / "app.py").write_text("import anyclaude.services.engine.a\n")
    (fake / "anyclaude" / "lib.py").write_text("from anyclaude.services import kvstore\n")
    (fake / "services" / "engine" / "ok.py").write_text("from . import a\nfrom anyclaude import bus\n")
    found = crossings(fake)
    assert len(found) == 3, found
    assert any("services/engine imports anyclaude.services.frontdoor" in f for f in found)
    assert any("services/frontdoor imports anyclaude.services.engine.a" in f for f in found)
    assert any("the library (anyclaude/) imports anyclaude.services.kvstore" in f for f in found)
