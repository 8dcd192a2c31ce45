"""YAML read safely: `yaml.safe_load` with bounds, so that a config file or an override that would blow up once read
(a "billion laughs" of aliases, nesting past Python's recursion limit, a file of megabytes) is one ConfigError line
naming where, read in a fraction of a second and in little memory."""

from __future__ import annotations

from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from dlforge.errors import ConfigError

YAML_MAX_BYTES = 1 << 20  # a config file; a larger one is refused unread
YAML_MAX_VALUES = 100_000  # values once aliases are expanded: a few lines of aliases can stand for billions
YAML_MAX_DEPTH = 50  # levels of nesting, aliases expanded


def read_yaml(path: Path | Traversable) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = f.read(YAML_MAX_BYTES + 1)
        if len(data) > YAML_MAX_BYTES:
            raise ConfigError(f"{path}: larger than {YAML_MAX_BYTES >> 20} MiB; a config file is a few kilobytes")
        data = load_yaml(data.decode("utf-8"), str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with data, model and train sections")
    return data


def load_yaml(text: str, where: str) -> Any:
    """YAML text as Python values, like `yaml.safe_load`, refusing (one ConfigError naming `where`) what would blow
    up once read: more than YAML_MAX_VALUES values with aliases expanded (the "billion laughs"), nesting deeper than
    YAML_MAX_DEPTH, an alias inside its own anchor. A syntax error is a yaml.YAMLError, as from `yaml.safe_load`."""
    loader = _BoundedLoader(text, where)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, text: str, where: str):
        super().__init__(text)
        self.where, self.depth = where, 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1  # the composer recurses once per level: stop it before Python's recursion limit does
        try:
            if self.depth > YAML_MAX_DEPTH:
                self._refuse(f"nested deeper than {YAML_MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        if self._expanded(node, {}, set(), 1) > YAML_MAX_VALUES:
            self._refuse(f"more than {YAML_MAX_VALUES} values once its aliases are expanded", node.start_mark)
        return node

    def _expanded(self, node: yaml.Node, sizes: dict[int, int], open_nodes: set[int], depth: int) -> int:
        """How many values `node` stands for, aliases expanded; each distinct node is counted once (`sizes`)."""
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            self._refuse("an alias refers to the value that holds it", node.start_mark)
        if depth > YAML_MAX_DEPTH:
            self._refuse(f"nested deeper than {YAML_MAX_DEPTH} levels once its aliases are expanded", node.start_mark)
        children = node.value if isinstance(node, yaml.SequenceNode) else []
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        open_nodes.add(id(node))
        sizes[id(node)] = 1 + sum(self._expanded(c, sizes, open_nodes, depth + 1) for c in children)
        open_nodes.discard(id(node))
        return sizes[id(node)]

    def _refuse(self, problem: str, mark: yaml.Mark) -> None:
        raise ConfigError(f"{self.where}:{mark.line + 1}: {problem}; refused")
