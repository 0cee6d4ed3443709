"""The package's shape, beside the import-linter contract in pyproject.toml (the layers):
no module reaches into another package's private modules."""

from __future__ import annotations

import grimp


def _private_owner(module: str) -> str | None:
    """The package whose private module ``module`` is, if it is one (``a.b._c`` -> ``a.b``)."""
    parts = module.split(".")
    for index, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:index])
    return None


def test_no_import_reaches_into_another_packages_private_modules() -> None:
    graph = grimp.build_graph("otel_gateway", cache_dir=None)
    reaching = []
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            owner = _private_owner(imported)
            if owner is not None and importer != owner and not importer.startswith(owner + "."):
                reaching.append(f"{importer} -> {imported}")
    assert sorted(reaching) == []


def test_the_private_module_rule_sees_a_reach() -> None:
    assert _private_owner("otel_gateway.chat._specs") == "otel_gateway.chat"
    assert _private_owner("otel_gateway._urls") == "otel_gateway"
    assert _private_owner("otel_gateway.chat") is None


def test_only_the_entry_point_reads_the_environment() -> None:
    """``cli.py`` reads it and passes what it says in; configuration loading takes the mapping its
    caller gives for ``${VAR}`` (the process's when none is given: library use and reloads)."""
    import ast
    from pathlib import Path

    import otel_gateway

    root = Path(otel_gateway.__file__).parent
    readers = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
                readers.add(str(path.relative_to(root)))
    assert readers == {"cli.py", "config/_load.py"}
