"""The floors of the code base, enforced (house style 15): a module imports only from its own floor or the
floors below it, the key service's callers link only its client and wire contract, and no import cycle
exists among our modules — imports inside functions included, which is where cycles like to hide.

    bench                                   the benchmark
    shell                                   CLI, demo, soak, dev services and credentials, docs
    producers · consumers · keyservice      the components (and keyservice.client / keyservice.wire,
                                            all that a caller of the key service links)
    pulseseal                               the ground floor: envelope, settings, topology, store, logs
    schemas                                 pure models and the standard library
"""

from __future__ import annotations

from collections.abc import Iterator

import grimp
import pytest

FLOORS: tuple[frozenset[str], ...] = (
    frozenset({"schemas"}),
    frozenset({"pulseseal"}),
    frozenset({"producers", "consumers", "keyservice"}),
    frozenset({"shell"}),
    frozenset({"bench"}),
)
PACKAGES = tuple(sorted(set().union(*FLOORS)))
# Who may import which part of the key service: its callers link only the client and the wire contract.
CALLER_SIDE = ("producers", "consumers", "schemas", "pulseseal", "keyservice.client", "keyservice.wire")
CALLER_LINKS = ("keyservice.client", "keyservice.wire")


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _floor(module: str) -> int:
    return next(i for i, packages in enumerate(FLOORS) if _top(module) in packages)


def _imports(graph: grimp.ImportGraph) -> Iterator[tuple[str, str]]:
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            yield importer, imported


def _where(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    lines = sorted(d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported))
    return f"{importer} (line {lines[0]})" if lines else importer


def floor_violations(graph: grimp.ImportGraph) -> list[str]:
    """Every import that reaches up a floor, or past the key service's client and wire contract."""
    found = []
    for importer, imported in _imports(graph):
        if _floor(imported) > _floor(importer):
            found.append(f"{_where(graph, importer, imported)} imports {imported}, a floor above it")
        elif (
            _within(importer, CALLER_SIDE)
            and _top(imported) == "keyservice"
            and not _within(imported, CALLER_LINKS)
            and imported != "keyservice"
        ):
            found.append(
                f"{_where(graph, importer, imported)} imports the key-service server module {imported}; "
                "callers link only keyservice.client and keyservice.wire"
            )
        elif _within(importer, ("keyservice.wire",)) and _within(imported, ("keyservice.client",)):
            found.append(
                f"{_where(graph, importer, imported)} imports {imported}: the wire is below the client"
            )
    return found


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected sets of modules (Tarjan's algorithm): every import cycle, each listed once."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        # Iterative, so a long import chain cannot hit the recursion limit.
        nonlocal counter
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == module:
                        break
                if len(members) > 1 or graph.direct_import_exists(importer=module, imported=module):
                    cycles.append(sorted(members))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)


def test_every_package_has_a_floor(graph: grimp.ImportGraph) -> None:
    assert {_top(m) for m in graph.modules} == set(PACKAGES)


def test_no_import_reaches_up_a_floor_or_into_the_key_service_server(graph: grimp.ImportGraph) -> None:
    assert floor_violations(graph) == []


def test_there_is_no_import_cycle(graph: grimp.ImportGraph) -> None:
    assert import_cycles(graph) == []


def test_the_check_fails_on_an_import_from_the_ground_floor_into_the_shell(graph: grimp.ImportGraph) -> None:
    graph.add_import(importer="pulseseal.envelope", imported="shell.cli", line_number=1, line_contents="x")
    graph.add_import(importer="consumers.keys", imported="keyservice.store", line_number=2, line_contents="x")
    try:
        assert floor_violations(graph) == [
            "consumers.keys (line 2) imports the key-service server module keyservice.store; "
            "callers link only keyservice.client and keyservice.wire",
            "pulseseal.envelope (line 1) imports shell.cli, a floor above it",
        ]
    finally:
        graph.remove_import(importer="pulseseal.envelope", imported="shell.cli")
        graph.remove_import(importer="consumers.keys", imported="keyservice.store")


def test_the_check_finds_a_cycle_hidden_in_a_function(graph: grimp.ImportGraph) -> None:
    # As `shell.demo.main` → `shell.cli` → `shell.cli.demo` → `shell.demo.main` once did, lazily.
    graph.add_import(importer="schemas.events", imported="schemas.export", line_number=1, line_contents="x")
    graph.add_import(importer="schemas.export", imported="schemas.events", line_number=1, line_contents="x")
    try:
        assert ["schemas.events", "schemas.export"] in import_cycles(graph)
    finally:
        graph.remove_import(importer="schemas.events", imported="schemas.export")
        graph.remove_import(importer="schemas.export", imported="schemas.events")
