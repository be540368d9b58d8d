"""Reading a study file: safe YAML with line numbers, ``--set`` overrides, then validation.

A study file is data: it is read with a safe loader (tags that would construct objects are
refused, duplicate keys too), and each field path is indexed by its line for error messages.
Its size is bounded before anything is built from it: the file (``MAX_FILE_BYTES``), its
nesting (``MAX_DEPTH``, below Python's recursion limit) and its size with aliases expanded
(``MAX_NODES``: a "billion laughs" file is a few hundred bytes that expand to 10^9 nodes).
It must be UTF-8 text.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ablations.study.expansion import Study
from ablations.study.messages import StudyError, shorten
from ablations.study.validation import validate_study

MAX_FILE_BYTES = 1_000_000  # the largest study in studies/ is under 4 kB
MAX_DEPTH = 50  # nesting levels; a study needs about 6
MAX_NODES = 100_000  # scalars, lists and mappings, counting each alias as the copy it stands for


class _TooBig(yaml.YAMLError):
    """The document exceeds a bound; raised while composing, before anything is constructed."""

    def __init__(self, problem: str, mark: yaml.Mark | None):
        self.problem, self.problem_mark = problem, mark


class _Loader(yaml.SafeLoader):
    """Safe loader that refuses duplicate keys (PyYAML silently keeps the last one), nesting
    deeper than ``MAX_DEPTH`` and aliases to a node that contains them (a cycle)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None and node.end_mark is None:  # PyYAML sets end_mark once a node is complete
                raise _TooBig(
                    f"alias *{event.anchor[:40]} is inside the node it refers to (a cycle); study files are trees",
                    event.start_mark,
                )
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooBig(
                    f"nested deeper than {MAX_DEPTH} levels (a study needs about 6)", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes in the document once every alias is replaced by a copy of what it refers to."""
    key = id(node)
    if key not in memo:
        if isinstance(node, yaml.SequenceNode):
            memo[key] = 1 + sum(_expanded_size(v, memo) for v in node.value)
        elif isinstance(node, yaml.MappingNode):
            memo[key] = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
        else:
            memo[key] = 1
    return memo[key]


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _line_index(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
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
    data, lines = _parse(text, source, "")
    if data is None:
        raise StudyError(source, ["the file is empty: a study needs at least name and variants"])
    if not isinstance(data, dict):
        raise StudyError(source, [f"the top level must be a mapping of study keys, got {type(data).__name__}"])
    return data, lines


def _parse(text: str, source: str, what: str) -> tuple[Any, dict[tuple, int]]:
    """Compose, bound, index and construct one YAML document (``what`` prefixes each message)."""
    loader = None
    try:
        loader = _Loader(text)  # PyYAML checks the characters here
        node = loader.get_single_node()
        if node is None:
            return None, {}
        size = _expanded_size(node, {})
        if size > MAX_NODES:
            raise _TooBig(
                f"{size:,} values once its aliases are expanded, above the {MAX_NODES:,} a study "
                "file may hold (an alias bomb?)",
                None,
            )
        lines = _line_index(node)
        return loader.construct_document(node), lines
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = str(err.problem)
        if "constructor for the tag" in problem:
            problem = (
                f"YAML tag {err.problem_mark and _tag_of(err)} is not allowed: study files are data, "
                "nothing in them is constructed or executed"
            )
        raise StudyError(source, [what + where + problem]) from None
    except _TooBig as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise StudyError(source, [f"{what}refused{where}: {err.problem}"]) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        raise StudyError(
            source, [f"{what}YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {err.problem}"]
        ) from None
    except yaml.reader.ReaderError as err:  # a control character or an invalid code point
        raise StudyError(
            source,
            [
                f"{what}character {err.character:#06x} at position {err.position} is not "
                "allowed in YAML (a control character: is this a text file?)"
            ],
        ) from None
    except (yaml.YAMLError, RecursionError) as err:
        raise StudyError(source, [f"{what}unreadable YAML ({type(err).__name__}: {str(err)[:200]})"]) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_text(path: str | Path) -> str:
    """A study file's text: at most ``MAX_FILE_BYTES``, UTF-8 (a UTF-8 byte-order mark is allowed).

    Raises:
        StudyError: missing, unreadable, too large, binary, UTF-16/32 or not UTF-8.
    """
    source = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise StudyError(source, [f"cannot read the study file: {err.strerror}"]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise StudyError(
            source,
            [
                f"the file is larger than {MAX_FILE_BYTES:,} bytes; a study file is a few kB of "
                "YAML (is this the right file?)"
            ],
        )
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise StudyError(source, ["the file is UTF-16 (or UTF-32) encoded: save it as UTF-8"])
    if b"\x00" in raw:
        raise StudyError(source, ["the file is binary (it holds NUL bytes), not YAML text"])
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise StudyError(
            source,
            [
                f"the file is not UTF-8 text: byte 0x{raw[err.start]:02x} at line {line} "
                "cannot be decoded; save it as UTF-8"
            ],
        ) from None


def _tag_of(err: yaml.constructor.ConstructorError) -> str:
    m = re.search(r"tag '([^']+)'", str(err.problem))
    return repr(m.group(1)) if m else "(unknown)"


def load_study(path: str | Path, sets: list[str] | None = None, *, check_paths: bool = True) -> Study:
    """Read, override (``--set key=value``), validate and expand a study file.

    Raises:
        StudyError: with every problem found; nothing has been started.
    """
    source = str(path)
    raw, lines = parse_yaml(read_text(path), source)
    for item in sets or []:
        apply_set(raw, item, source)
    given = [item.partition("=")[0] for item in sets or []]
    return validate_study(raw, source, lines, check_paths=check_paths, set_keys=given)


def apply_set(raw: dict[str, Any], item: str, source: str = "--set") -> None:
    """Apply one ``key=value`` override to the raw study (value parsed as YAML, safely)."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise StudyError(source, [f"--set {shorten(item)}: expected key=value, e.g. --set base.train.epochs=2"])
    value = _parse(text, source, f"--set {shorten(key, 80)}: ")[0] if text else None
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        rest = ".".join(parts[i:])
        if rest in node:  # a dot-path key inside variants or grid
            node[rest] = value
            return
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise StudyError(source, [f"--set {shorten(key)}: {'.'.join(parts[: i + 1])} is not a mapping"])
    node[parts[-1]] = value
