"""Reading a study file: safe YAML with line numbers, ``--set`` overrides, then validation.

A study file is data: it is read with a safe loader (tags that would construct objects are
refused, duplicate keys too), and each field path is indexed by its line for error messages.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from ablations.study.expansion import Study, validate_study
from ablations.study.messages import StudyError


class _Loader(yaml.SafeLoader):
    """Safe loader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _line_index(node: yaml.Node, path: tuple = (), out: Optional[dict] = None) -> dict[tuple, int]:
    """Field path -> 1-based line of its key, for error messages."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            # keys under variants and grid are dot paths: index them by their parts
            split = path[:1] in (("variants",), ("grid",))
            p = path + (tuple(str(k.value).split(".")) if split else (str(k.value),))
            out.setdefault(p, k.start_mark.line + 1)
            _line_index(v, p, out)
    return out


def parse_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[tuple, int]]:
    """Parse study YAML safely; returns the data and a field-path -> line index."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise StudyError(source, ["the file is empty: a study needs at least name and variants"])
        lines = _line_index(node)
        data = loader.construct_document(node)
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = str(err.problem)
        if "constructor for the tag" in problem:
            problem = (f"YAML tag {err.problem_mark and _tag_of(err)} is not allowed: study files are data, "
                       "nothing in them is constructed or executed")
        raise StudyError(source, [where + problem]) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        raise StudyError(source, [f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {err.problem}"]
                         ) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise StudyError(source, [f"the top level must be a mapping of study keys, got {type(data).__name__}"])
    return data, lines


def _tag_of(err: yaml.constructor.ConstructorError) -> str:
    m = re.search(r"tag '([^']+)'", str(err.problem))
    return repr(m.group(1)) if m else "(unknown)"


def load_study(path: Union[str, Path], sets: Optional[list[str]] = None, *, check_paths: bool = True) -> Study:
    """Read, override (``--set key=value``), validate and expand a study file.

    Raises:
        StudyError: with every problem found; nothing has been started.
    """
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise StudyError(source, [f"cannot read the study file: {err.strerror}"]) from None
    raw, lines = parse_yaml(text, source)
    for item in sets or []:
        apply_set(raw, item, source)
    return validate_study(raw, source, lines, check_paths=check_paths)


def apply_set(raw: dict[str, Any], item: str, source: str = "--set") -> None:
    """Apply one ``key=value`` override to the raw study (value parsed as YAML, safely)."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise StudyError(source, [f"--set {item!r}: expected key=value, e.g. --set base.train.epochs=2"])
    try:
        value = yaml.load(text, Loader=_Loader) if text else None
    except yaml.YAMLError as err:
        raise StudyError(source, [f"--set {item!r}: the value is not valid YAML ({err})"]) from None
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        rest = ".".join(parts[i:])
        if rest in node:  # a dot-path key inside variants or grid
            node[rest] = value
            return
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise StudyError(source, [f"--set {item!r}: {'.'.join(parts[:i + 1])} is not a mapping"])
    node[parts[-1]] = value
