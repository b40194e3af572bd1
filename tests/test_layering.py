"""The layers import one way (../shared/STYLE.md): spec (no torch) → model (torch, no distributed) →
parallel (process groups, DeepSpeed) → entry points in launch/. Read from the source with `ast`, so a
lazy import inside a function counts too."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPEC = ["llm/spec/scaling.py", "llm/spec/fit.py", "llm/spec/shape.py", "llm/spec/flops.py", "llm/spec/plan.py", "llm/config.py",
        "typed_yaml/__init__.py"]
# The alignment stages' DeepSpeed adapter is the one llm/ module that reaches into parallel/ (it wraps each
# trainable model with parallel.engine.initialize_engine); everything else in llm/ stays launcher-agnostic.
PARALLEL_ADAPTERS = {"llm/align/engine.py"}


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def offenders(files, banned) -> dict[str, set[str]]:
    found = {}
    for f in files:
        bad = {m for m in imported_modules(ROOT / f) if any(m == b or m.startswith(b + ".") for b in banned)}
        if bad:
            found[str(f)] = bad
    return found


def test_spec_layer_has_no_torch():
    assert offenders(SPEC, ["torch", "deepspeed", "parallel"]) == {}


def test_model_training_and_data_know_nothing_of_parallelism():
    files = [p.relative_to(ROOT).as_posix() for d in ("llm", "data_pipeline") for p in (ROOT / d).rglob("*.py")]
    files = [f for f in files if f not in PARALLEL_ADAPTERS]
    assert offenders(files, ["deepspeed", "parallel", "torch.distributed"]) == {}


def test_nothing_below_launch_imports_an_entry_point():
    files = [p.relative_to(ROOT).as_posix() for d in ("llm", "parallel", "data_pipeline") for p in (ROOT / d).rglob("*.py")]
    assert offenders(files, ["launch"]) == {}
