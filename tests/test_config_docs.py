"""Every field a user can set in a config file has a docstring (../shared/STYLE.md: "a docstring on every config
field, with its unit and its constraint"): the attribute docstring, a string literal right after the field, as in
litgpt and as `help` in our own YAML files' comments.

The config dataclasses are those defined in CONFIG_MODULES, and every dataclass their fields hold, at any depth
(the data pipeline's filter and dedup settings live in the filter classes themselves). Add a module here when it
defines a config that YAML is read into.
"""
import ast
import dataclasses
import importlib
import inspect
import textwrap
import typing

import pytest

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

CONFIG_MODULES = (
    "typed_yaml",
    "llm.config",
    "llm.config.data",
    "llm.config.model",
    "llm.config.parallel",
    "llm.config.training",
    "data_pipeline.config",
    "llm.align.config",
    "llm.align.sections",
    "llm.align.rl_sections",
)


def _nested_dataclasses(tp) -> typing.Iterator[type]:
    """The dataclasses a field of type `tp` holds: itself, or inside Optional/list/dict/union."""
    if dataclasses.is_dataclass(tp):
        yield tp
        return
    for arg in typing.get_args(tp):
        yield from _nested_dataclasses(arg)


def config_classes(modules=CONFIG_MODULES) -> list[type]:
    """The dataclasses defined in `modules` and every dataclass reachable through their fields' types."""
    todo = []
    for name in modules:
        module = importlib.import_module(name)
        todo += [c for c in vars(module).values()
                 if inspect.isclass(c) and dataclasses.is_dataclass(c) and c.__module__ == name]
    seen: dict[type, None] = {}
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen[cls] = None
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            todo += list(_nested_dataclasses(hints[f.name]))
    return sorted(seen, key=lambda c: (c.__module__, c.__qualname__))


def attribute_docstrings(cls: type) -> dict[str, str]:
    """{field: its docstring} of `cls` and its bases: a string literal statement right after an annotated
    assignment in the class body (what Sphinx autodoc and litgpt read as the attribute's docstring)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's docstring wins over its base's
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for stmt, after in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[stmt.target.id] = after.value.value
    return docs


def undocumented(cls: type) -> list[str]:
    """Fields of `cls` without a docstring, or whose docstring only repeats the field's name."""
    docs = attribute_docstrings(cls)
    out = []
    for f in dataclasses.fields(cls):
        text = " ".join(docs.get(f.name, "").split())
        if not text or text.strip(".").lower().replace(" ", "_") == f.name.lower():
            out.append(f.name)
    return out


def test_the_walk_finds_the_configs_and_what_they_hold():
    names = {c.__qualname__ for c in config_classes()}
    assert {"RunConfig", "ParallelConfig", "TrainConfig", "ReaderConfig", "MinHashConfig", "C4Filter",
            "GopherRepetitionFilter", "TokenizeConfig", "CanaryConfig", "PrepareConfig", "Renamed"} <= names
    assert {"AlignConfig", "TaskConfig", "TemplateConfig", "BaseConfig", "SFTConfig", "RMConfig", "DPOConfig",
            "EvalConfig", "PPOConfig", "GRPORLOOConfig"} <= names


@pytest.mark.parametrize("cls", config_classes(), ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_config_field_has_a_docstring(cls):
    missing = undocumented(cls)
    assert not missing, (f"{cls.__module__}.{cls.__qualname__}: {', '.join(missing)} without a docstring; write "
                         "one right after the field: what it does, its unit, its constraint, why its default")


def test_the_check_sees_a_missing_docstring_and_an_inherited_one():
    @dataclasses.dataclass
    class Base:
        a: int = 0
        """Documented in the base."""

    @dataclasses.dataclass
    class Child(Base):
        b: int = 1
        c: int = 2
        """c."""

    assert attribute_docstrings(Child) == {"a": "Documented in the base.", "c": "c."}
    assert undocumented(Child) == ["b", "c"]
