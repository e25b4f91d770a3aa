"""Reading a topology file's YAML: the document, and the line of every key and item in it
(PyYAML's composer, whose nodes know their lines; the C one when PyYAML has it).  Duplicate keys,
which YAML forbids and PyYAML's loader lets the last one win, are refused."""

from __future__ import annotations

import yaml

from lowbridge.errors import InvalidInput

Path = tuple[str | int, ...]


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read the topology: {exc}") from None


def parse(text: str, path: str) -> tuple[dict, dict[Path, int]]:
    """The top-level mapping and the lines by path, or InvalidInput ``FILE:LINE: ...``."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise InvalidInput(f"{path}:1: the file is empty (it needs at least 'lab: NAME')")
        lines: dict[Path, int] = {}
        _lines(node, (), lines, path)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInput(f"{path}:{line}: YAML syntax error: {problem}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}:1: the top level must be a mapping (lab, networks, sandboxes)")
    return data, lines


def lab_name(path: str) -> str:
    """Only the lab's name (what ``destroy`` needs): the rest of the file is not checked, so a
    lab whose file no longer validates can still be destroyed."""
    from lowbridge import names

    data, lines = parse(read(path), path)
    name = data.get("lab")
    if not isinstance(name, str):  # the schema's words (lowbridge.lab.topology)
        what = "missing field" if name is None else "input should be a valid string"
        raise InvalidInput(f"{path}:{lines.get(('lab',), 1)}: lab: {what}")
    try:
        return names.validate_name("lab", name)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}:{lines[('lab',)]}: lab: {exc}") from None


def _lines(node: yaml.Node, at: Path, lines: dict[Path, int], path: str) -> None:
    """Record the line of every key and item under ``node``; refuse duplicate keys."""
    lines.setdefault(at, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
            if name in seen:
                field = ".".join(map(str, (*at, name)))
                raise InvalidInput(f"{path}:{key.start_mark.line + 1}: {field}: duplicate key")
            seen.add(name)
            lines[(*at, name)] = key.start_mark.line + 1
            _lines(value, (*at, name), lines, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*at, i), lines, path)
