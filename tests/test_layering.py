"""The package layering of issue #11, checked on the source itself (ast, nothing imported).

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a deferred
import hides a dependency from the interpreter, not from the design, and the one cycle issue
#11 named (``auth/authenticator`` <-> ``state``) was exactly such a hidden one. Each failure
names the importing file, its line and the rule it breaks, so the message is the fix list.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "router", "distill", "tierwise_common", "flywheel")
MAX_LINES = 400
LINE_LIMITED = ("gateway", "router", "distill", "flywheel")
LOWER_LAYERS = ("ledger", "tiers", "auth", "limits", "routing", "shadow", "capture", "control")
# Off the request path: operator commands, test-only servers, offline reports.
OFF_REQUEST_PATH = ("gateway.cli", "gateway.__main__", "gateway.devtools", "gateway.reports")
HEAVY = ("torch", "transformers", "vllm")


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name of the importing file
    target: str  # dotted name as imported (a module, or a package when the name is not a module)
    line: int
    module_level: bool  # executed when the importer is imported (not inside a function)

    def where(self) -> str:
        return f"{module_path(self.importer)}:{self.line} imports {self.target}"


def module_path(module: str) -> str:
    """The repo-relative file of ``module`` (a package's ``__init__.py``)."""
    base = REPO / Path(*module.split("."))
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    return str(path.relative_to(REPO))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))
            if "__pycache__" not in p.parts}


def _is_package(module: str) -> bool:
    return (REPO / Path(*module.split(".")) / "__init__.py").exists()


def _resolve(importer: str, node: ast.ImportFrom, known: set[str]) -> list[str]:
    """Dotted targets of ``from X import a, b``: ``X.a`` where that is a module, else ``X``."""
    if node.level:
        package = importer if _is_package(importer) else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = ".".join(p for p in (package, node.module or "") if p)
    else:
        base = node.module or ""
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]


def _imports_of(module: str, path: Path, known: set[str]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = module_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(module, alias.name, child.lineno, module_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                found.extend(Import(module, target, child.lineno, module_level)
                             for target in _resolve(module, child, known))
            visit(child, nested)

    visit(tree, True)
    return found


def all_imports() -> list[Import]:
    files = source_files()
    known = set(files)
    return [imp for module, path in files.items() for imp in _imports_of(module, path, known)]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _internal(target: str, known: set[str]) -> str | None:
    """The repo module ``target`` names (its longest known prefix), or None for third-party code."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


IMPORTS = all_imports()
KNOWN = set(source_files())


def _violations(importers: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return [imp.where() for imp in IMPORTS
            if any(_within(imp.importer, p) for p in importers) and any(_within(imp.target, f) for f in forbidden)]


def test_router_distill_and_common_never_import_the_gateway():
    bad = _violations(("router", "distill", "tierwise_common"), ("gateway",))
    assert not bad, "router/, distill/ and tierwise_common/ must not depend on gateway/:\n" + "\n".join(bad)


def test_only_the_flywheel_orchestrates_the_others():
    bad = _violations(("gateway", "router", "distill", "tierwise_common"), ("flywheel",))
    assert not bad, "the flywheel sits above gateway/, router/ and distill/; none of them may import it:\n" + "\n".join(bad)


def test_lower_gateway_layers_never_import_entrypoints_app_or_cli():
    lower = tuple(f"gateway.{layer}" for layer in LOWER_LAYERS)
    bad = _violations(lower, ("gateway.entrypoints", "gateway.app", "gateway.cli"))
    assert not bad, ("ledger/tiers/auth/limits/routing/shadow are below the HTTP layer and must not import "
                     "entrypoints, app or cli:\n" + "\n".join(bad))


def test_ledger_never_imports_tiers():
    bad = _violations(("gateway.ledger",), ("gateway.tiers",))
    assert not bad, "the ledger books rows and must not know how tiers are called:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a self-import), Tarjan's way."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_import_cycles_among_gateway_modules():
    graph: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], Import] = {}
    for imp in IMPORTS:
        target = _internal(imp.target, KNOWN)
        if _within(imp.importer, "gateway") and target and _within(target, "gateway") and target != imp.importer:
            # A package's __init__ re-exporting its own submodules is not a cycle of design.
            if _within(target, imp.importer) or _within(imp.importer, target):
                continue
            graph.setdefault(imp.importer, set()).add(target)
            lines.setdefault((imp.importer, target), imp)
    cycles = _cycles(graph)
    report = []
    for component in cycles:
        members = set(component)
        edges = [lines[(a, b)].where() for a in component for b in sorted(graph.get(a, ())) if b in members]
        report.append(f"cycle among {', '.join(component)}:\n  " + "\n  ".join(edges))
    assert not cycles, "import cycles in gateway/ (each listed import is one edge of the cycle):\n" + "\n".join(report)


def test_no_module_over_the_line_limit():
    too_long = []
    for module, path in source_files().items():
        if any(_within(module, p) for p in LINE_LIMITED):
            count = len(path.read_text(encoding="utf-8").splitlines())
            if count > MAX_LINES:
                too_long.append(f"{path.relative_to(REPO)}: {count} lines")
    assert not too_long, f"modules over {MAX_LINES} lines (split them by job):\n" + "\n".join(too_long)


def test_request_path_never_imports_torch_transformers_or_vllm():
    """Directly from any request-path gateway module, or at module level through repo code it imports."""
    on_path = [m for m in sorted(KNOWN) if _within(m, "gateway") and not any(_within(m, o) for o in OFF_REQUEST_PATH)]
    by_importer: dict[str, list[Import]] = {}
    for imp in IMPORTS:
        by_importer.setdefault(imp.importer, []).append(imp)
    bad: list[str] = []
    for root in on_path:
        for imp in by_importer.get(root, []):
            if any(_within(imp.target, h) for h in HEAVY):
                bad.append(imp.where())
    # Module-level imports reachable from the request path through router/, distill/, tierwise_common/.
    chain: dict[str, str] = {m: m for m in on_path}
    frontier = list(on_path)
    while frontier:
        module = frontier.pop()
        for imp in by_importer.get(module, []):
            if not imp.module_level and not _within(module, "gateway"):
                continue
            target = _internal(imp.target, KNOWN)
            if target and target not in chain and not _within(target, "gateway"):
                chain[target] = f"{chain[module]} -> {target}"
                frontier.append(target)
    for module, via in chain.items():
        if _within(module, "gateway"):
            continue
        for imp in by_importer.get(module, []):
            if imp.module_level and any(_within(imp.target, h) for h in HEAVY):
                bad.append(f"{imp.where()} (reached via {via})")
    assert not bad, "torch/transformers/vllm must stay off the gateway's request path:\n" + "\n".join(sorted(set(bad)))


def test_the_checker_sees_the_imports_it_rules_on():
    """Guard against a parser that finds nothing and passes every rule vacuously."""
    gateway_edges = {(imp.importer, imp.target) for imp in IMPORTS}
    assert ("gateway.app", "gateway.config") in gateway_edges
    assert ("gateway.shadow.agreement", "tierwise_common.text_metrics") in gateway_edges
    assert len(KNOWN) > 100
