"""The layout keeps its promises (docs/architecture.md): layers as packages, imports only downwards, no cycle,
no oversized file, listeners by name, all SQL in bot/store."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOT = ROOT / "bot"

# Top to bottom: a module may import its own tier and any tier below it, never one above.
TIERS = [
    {"bot.__main__", "bot.cli", "bot.serve", "bot.runtime", "bot.testing"},
    {"handlers"},
    {"bot.work"},
    {"bot.slack"},
    {"bot.ui"},
    {"bot.voice"},
    {"bot.tencent"},
    {"bot.store"},
    {"bot", "bot.settings", "bot.errors", "bot.logs", "bot.metrics", "bot.retry", "bot.wake", "bot.vocabulary"},
]
# The one upward edge by design: the Bolt app registers the listeners (handlers import bot, not the other way).
ALLOWED_UP = {("bot.slack.app", "handlers")}


def _modules() -> dict[str, Path]:
    found = {}
    for path in [*BOT.rglob("*.py"), *(ROOT / "handlers").rglob("*.py")]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {module for module in out if module in MODULES and module != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _tier(module: str) -> int:
    for depth in range(module.count(".") + 1, 0, -1):
        prefix = ".".join(module.split(".")[:depth])
        for index, tier in enumerate(TIERS):
            if prefix in tier:
                return index
    raise AssertionError(f"{module} belongs to no tier: add it to TIERS and docs/architecture.md")


def test_bot_is_a_few_modules_and_packages_that_name_the_layers() -> None:
    top = sorted(p.name for p in BOT.glob("*.py"))
    packages = sorted(p.name for p in BOT.iterdir() if (p / "__init__.py").exists())
    assert len(top) <= 12, top
    assert {"slack", "store", "tencent", "ui", "voice", "work", "testing"} <= set(packages), packages


def test_no_product_file_is_over_800_lines() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in MODULES.values()}
    assert {path: lines for path, lines in sizes.items() if lines > 800} == {}


def test_no_two_modules_share_a_name_with_different_meanings() -> None:
    # handlers/ names the kind of Slack request; nothing in bot/ may reuse those names.
    leaves: dict[str, list[str]] = {}
    for name in MODULES:
        if name.startswith(("bot.", "handlers.")) and not name.endswith("__main__"):
            leaves.setdefault(name.rsplit(".", 1)[1], []).append(name)
    repeated = {leaf: names for leaf, names in leaves.items() if len(names) > 1}
    assert repeated == {}


def test_imports_only_go_down_the_layers() -> None:
    upward = sorted(
        (module, imported)
        for module, imports in GRAPH.items()
        for imported in imports
        if _tier(imported) < _tier(module) and (module, imported) not in ALLOWED_UP
    )
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError(" -> ".join([*path[path.index(module):], module]))
        if module in done:
            return
        path.append(module)
        for imported in sorted(GRAPH[module]):
            # `import bot.x` also imports package bot: a package's own __init__ is not a dependency edge.
            if not module.startswith(imported + "."):
                visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)


def test_listeners_are_module_level_and_register_only_registers() -> None:
    for path in sorted((ROOT / "handlers").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "register":
                kinds = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
                nested = [n for n in ast.walk(node) if isinstance(n, kinds) and n is not node]
                assert nested == [], f"{path.name}: register() defines {len(nested)} function(s) of its own"


SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+TABLE)\b", re.I | re.S)


def test_all_sql_lives_in_the_store() -> None:
    outside = []
    for name, path in MODULES.items():
        if name.startswith(("bot.store", "bot.testing")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                outside.append(f"{name}:{node.lineno}")
    assert outside == []


def test_no_dialect_check_outside_the_store() -> None:
    # Code outside bot/store asks the store for behaviour; it never looks at which database is underneath
    # (bot.settings reads DATABASE_URL, so it alone knows the scheme).
    dialect_names = {"PostgresDatabase", "SqliteDatabase", "sqlite3", "psycopg", "postgres", "dialect"}
    outside = []
    for name, path in MODULES.items():
        if name.startswith(("bot.store", "bot.testing", "bot.settings")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            used = (
                node.attr if isinstance(node, ast.Attribute)
                else node.id if isinstance(node, ast.Name)
                else next((a.name for a in node.names if a.name.split(".")[0] in dialect_names), None)
                if isinstance(node, ast.Import | ast.ImportFrom) else None
            )
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if used in dialect_names or (module or "").split(".")[0] in {"sqlite3", "psycopg"}:
                outside.append(f"{name}:{node.lineno}: {used or module}")
    assert outside == []
