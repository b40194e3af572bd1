"""The raw mapping a config is built from, read strictly: a YAML file (`read_yaml`) and the command line's dotted
overrides (`apply_overrides`, values parsed as YAML). Strictly: a key repeated in one mapping is refused (YAML's
loaders keep the last one without a word), and so is a document whose aliases expand past MAX_EXPANDED_NODES; every
mistake is one ConfigError naming the file or the override, the line and the column.
No torch here.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from typed_yaml.errors import ConfigError


class DuplicateKeyError(yaml.YAMLError):
    """A mapping defines the same key twice; YAML loaders otherwise keep the last one without a word."""


MAX_EXPANDED_NODES = 100_000
"""Most nodes a YAML document may expand to once every alias (`*name`) is replaced by what it names. Aliases are
shared, not copied, while parsing, but every walk of the result (key checks, typed construction, the copy saved
with each checkpoint) visits a shared node once per reference: nine levels of ten aliases ("billion laughs") is
1e9 nodes from a 400-byte file, minutes of a hung loader. Our largest config expands to a few hundred nodes."""


class AliasBombError(yaml.YAMLError):
    """A document whose aliases expand past MAX_EXPANDED_NODES."""


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes of `node` with every alias expanded, counted in time linear in the distinct nodes (memoised by id;
    the composer has already refused a recursive alias)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, sizes) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    sizes[id(node)] = size
    return size


def _check_unique_keys(node: yaml.Node, prefix: str = "", seen: set[int] | None = None) -> None:
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias of a node checked already: once is enough (and keeps the walk linear)
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique_keys(item, f"{prefix}[{i}]", seen)
    if not isinstance(node, yaml.MappingNode):
        return
    first_line: dict[object, int] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` overriding is YAML's own semantics
            continue
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
        line = key_node.start_mark.line + 1
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key in first_line:
            raise DuplicateKeyError(f"key '{dotted}' is defined twice (lines {first_line[key]} and {line}); "
                                    "keep one")
        first_line[key] = line
        _check_unique_keys(value_node, dotted, seen)


def yaml_problem(e: yaml.YAMLError) -> str:
    """One line for a YAML parse error: where, what, and while doing what (PyYAML's own text spans lines)."""
    if not isinstance(e, yaml.MarkedYAMLError) or e.problem is None:
        return " ".join(str(e).split())
    where = f"line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1}: " if e.problem_mark else ""
    return where + e.problem + (f" ({e.context})" if e.context else "")


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with a repeated key, at any depth, naming it and both lines."""

    def construct_document(self, node: yaml.Node):
        sizes: dict[int, int] = {}
        expanded = _expanded_size(node, sizes)
        if expanded > MAX_EXPANDED_NODES:
            raise AliasBombError(f"its aliases expand to {expanded:,} nodes, more than the {MAX_EXPANDED_NODES:,} "
                                 f"allowed ({len(sizes):,} written): write the repeated part out, or fewer levels "
                                 "of aliases")
        _check_unique_keys(node)
        return super().construct_document(node)


def apply_overrides(raw: dict, overrides, source: str = "command line", shorthands: dict[str, str] = {}) -> dict:
    """Apply `key.sub=value` strings to the nested dict `raw` (values parsed as YAML: `x=[a,b]`, `x=true`).

    shorthands: {section: field} for sections a YAML file may give as a scalar (`precision: bf16`), so that
    `precision.initial_loss_scale=8` still applies on top of it.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} must look like key.sub=value")
        dotted, text = item.split("=", 1)
        parts = dotted.strip().split(".")
        node = raw
        for p in parts[:-1]:
            if p in shorthands and not isinstance(node.get(p, {}), dict):
                node[p] = {shorthands[p]: node[p]}
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: cannot set '{dotted}': '{p}' is not a section")
        try:
            node[parts[-1]] = yaml.load(text, Loader=StrictLoader) if text != "" else None
        except AliasBombError as e:
            raise ConfigError(f"{source}: the value of '{dotted}' is refused: {e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: the value of '{dotted}' is not valid YAML: {yaml_problem(e)}") from None
        except RecursionError:
            raise ConfigError(f"{source}: the value of '{dotted}' nests too deeply to read") from None
    return raw


def read_yaml(path: str | Path) -> dict:
    """The top-level mapping of a YAML file; ConfigError if it is missing, unreadable, malformed, repeats a
    key or is not a mapping."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {path} is a directory, not a YAML file")
    if not p.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.load(p.read_text(), Loader=StrictLoader) or {}
    except (DuplicateKeyError, AliasBombError) as e:
        raise ConfigError(f"{path}: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path} nests collections too deeply to read (Python's recursion limit): flatten it") \
            from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw
