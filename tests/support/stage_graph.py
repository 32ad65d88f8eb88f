"""What a stage's code is, as files of the project: the import closure of ``charforge.stages.<command>``.

Every import counts, also one inside a function (the stages import heavy modules lazily); imports under
``if TYPE_CHECKING:`` do not (they never run). Importing ``charforge.a.b`` runs the ``__init__`` of
``charforge`` and ``charforge.a`` too, so those files are in the closure.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# setuptools' package-dir of pyproject.toml: the design card's folders installed under `charforge.`
PACKAGE_DIRS = {
    "charforge.schemas": "schemas",
    "charforge.generators": "generators",
    "charforge.train": "train",
    "charforge.eval": "eval",
    "charforge": "charforge",
}


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The project file of ``module`` (a package's ``__init__.py``), or None outside the project."""
    for package, folder in PACKAGE_DIRS.items():
        if module == package or module.startswith(package + "."):
            rest = module[len(package) :].lstrip(".").split(".") if module != package else []
            base = root / folder / Path(*rest) if rest else root / folder
            if base.with_suffix(".py").is_file():
                return base.with_suffix(".py")
            if (base / "__init__.py").is_file():
                return base / "__init__.py"
            return None
    return None


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(path: Path) -> Iterator[str]:
    """Every module an import statement of ``path`` names (``from a import b``: ``a.b`` and ``a``)."""

    def visit(node: ast.AST) -> Iterator[str]:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                yield from visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(ast.parse(path.read_text(encoding="utf-8")))


def _parents(module: str) -> Iterator[str]:
    parts = module.split(".")
    for end in range(1, len(parts)):
        yield ".".join(parts[:end])


def import_closure(module: str, root: Path = ROOT) -> set[Path]:
    """The project files that importing ``module`` and running its code can execute."""
    seen: set[Path] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        for candidate in [*_parents(name), name]:
            path = module_file(candidate, root)
            if path is None or path in seen:
                continue
            seen.add(path)
            pending.extend(imported_modules(path))
    return seen
