"""The layers import one way (../shared/STYLE.md), with no exceptions and no import cycles.

Every module of our packages is read with `ast` (so a lazy import inside a function counts too) and placed in a
layer; a module may import only from its own layer or lower ones. The layers are the table of docs/architecture.md
("## Layers"), read from there:

    typed_yaml < llm.config < llm.shape < llm.cost < llm.scaling < {llm.model, data_pipeline} < llm.hf < llm.train
        < {llm.hf.import_, llm.sweep} < {llm.align, llm.audit} < llm.eval < parallel < launch

data_pipeline imports nothing of ours but typed_yaml; the configs and the spec import no torch; below parallel/
nothing touches torch.distributed or DeepSpeed.
"""
import ast
import re
from pathlib import Path
import pytest

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("typed_yaml", "llm", "parallel", "data_pipeline", "launch")

DOC = ROOT / "docs" / "architecture.md"


def documented_layers() -> dict[str, float]:
    """{package: layer number} from the table under "## Layers" of docs/architecture.md, the one copy of the list."""
    section = DOC.read_text().split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([\d.]+) \| `([\w.]+)` \|", section, re.M)
    assert rows, f"{DOC}: no layer table under '## Layers'"
    return {package: float(number) for number, package in rows}


LAYERS = documented_layers()
NO_TORCH = ("typed_yaml", "llm.config", "llm.shape", "llm.cost", "llm.scaling")
NO_DISTRIBUTED = ("typed_yaml", "llm", "data_pipeline")  # everything below parallel/
DISTRIBUTED = ("torch.distributed", "deepspeed")


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in it; `from a import b` yields a.b as well (b may be a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def import_graph() -> dict[str, set[str]]:
    """{module: the modules of ours it imports} (an import of a name inside a module counts as the module)."""
    modules = our_modules()
    graph = {}
    for name, path in modules.items():
        graph[name] = {n for n in imported_names(path) if n in modules and n != name}
    return graph


def layer(module: str) -> str:
    matches = [prefix for prefix in LAYERS if _within(module, prefix)]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches, key=len)


def test_every_module_is_in_a_layer():
    for module in our_modules():
        layer(module)


def test_no_module_imports_from_a_higher_layer():
    upward = {}
    for module, deps in import_graph().items():
        bad = {d for d in deps if LAYERS[layer(d)] > LAYERS[layer(module)]
               or (layer(module) != layer(d) and LAYERS[layer(module)] == LAYERS[layer(d)])}
        if bad:
            upward[module] = sorted(bad)
    assert upward == {}


def test_data_pipeline_imports_only_typed_yaml_of_ours():
    graph = import_graph()
    bad = {m: sorted(d for d in deps if not (_within(d, "data_pipeline") or _within(d, "typed_yaml")))
           for m, deps in graph.items() if _within(m, "data_pipeline")}
    assert {m: d for m, d in bad.items() if d} == {}


def _third_party_offenders(prefixes, banned) -> dict[str, list[str]]:
    found = {}
    for module, path in our_modules().items():
        if any(_within(module, p) for p in prefixes):
            bad = sorted(n for n in imported_names(path) if any(_within(n, b) for b in banned))
            if bad:
                found[module] = bad
    return found


def test_configs_and_spec_import_no_torch():
    assert _third_party_offenders(NO_TORCH, ["torch", "deepspeed"]) == {}


def test_nothing_below_parallel_touches_distributed_or_deepspeed():
    assert _third_party_offenders(NO_DISTRIBUTED, DISTRIBUTED) == {}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path back to its start) per back edge of a depth-first walk; empty iff acyclic."""
    cycles, state = [], {}

    def visit(module, stack):
        state[module] = "open"
        stack.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    return cycles


def test_no_import_cycles():
    assert find_cycles(import_graph()) == []


def test_the_checks_see_lazy_imports_and_cycles():
    """The graph is not vacuous: a lazy import inside a function is an edge, and a planted cycle is found."""
    graph = import_graph()
    assert "parallel.universal" in graph["parallel.engine"]  # `from parallel import universal`
    assert "llm.train.checkpoint" in graph["parallel.parallelize"]  # imported inside parallelize()
    assert "parallel.names" in graph["parallel.consolidate"]
    assert "parallel.names" in graph["parallel.pipeline_checkpoint"]
    planted = dict(graph, **{"parallel.names": graph["parallel.names"] | {"parallel.consolidate"}})
    # The cycle is reported from whichever of its modules the walk reaches first.
    assert [c for c in find_cycles(planted) if sorted(c[:-1]) == ["parallel.consolidate", "parallel.names"]]
