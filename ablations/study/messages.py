"""How a study's problems are collected and worded: one line each, naming the field path (and its line in
the file), the bad value and what is allowed. ``Problems`` is the one collector every check adds to, and
``where`` the one lookup of where a field's value came from: its line in the file, ``--set``, or its default."""

from __future__ import annotations

import difflib
from dataclasses import fields, is_dataclass
from typing import Any, Union

from pydantic import BaseModel

from ablations.study.schema import StudySpec
from mto import ConfigError, section

MAX_VALUE_CHARS = 200  # a bad value is echoed up to this many characters, never whole
MAX_PROBLEM_CHARS = 600  # one problem stays one readable line whatever was embedded in it


def shorten(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters with the count of what was left out."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def _one_line(problem: str) -> str:
    """A problem as one line: newlines escaped, the middle of an over-long message left out."""
    text = problem.replace("\r", "\\r").replace("\n", "\\n")
    if len(text) <= MAX_PROBLEM_CHARS:
        return text
    head, tail = MAX_PROBLEM_CHARS * 2 // 3, MAX_PROBLEM_CHARS // 3
    return f"{text[:head]} ... ({len(text) - head - tail:,} characters left out) ... {text[-tail:]}"


class StudyError(Exception):
    """A study file is invalid. ``problems`` holds one message per problem, each one line of bounded length."""

    def __init__(self, source: str, problems: list[str]):
        self.source, self.problems = _one_line(source), [_one_line(p) for p in problems]
        super().__init__("\n".join(f"{self.source}: {p}" for p in self.problems))


def suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def describe(e: dict[str, Any], problems: Problems) -> str:
    """One line for one pydantic error: path (where): bad value -> what is allowed."""
    loc = tuple(str(p) for p in e["loc"])
    path = ".".join(loc) or "(top level)"
    msg = e["msg"].removeprefix("Value error, ")
    cause = e.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError) and loc[:1] == ("base",):  # mto's own check: it names the field
        full = ".".join(("base", *cause.path.split(".")))
        return f"{full}{problems.where(full)}: {shorten(cause.value)} is invalid: {cause.allowed}"
    if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = _allowed_keys(loc[:-1])
        return (
            f"{path}{problems.where(loc)}: unknown key {shorten(loc[-1])}{suggest(loc[-1], allowed)} "
            f"(allowed: {', '.join(allowed)})"
        )
    if e["type"] == "missing":
        line = line_of(problems.lines, loc)  # not in the file: the line of its section
        return f"{path}{f' (line {line})' if line else ''}: required, missing"
    return f"{path}{problems.where(loc)}: {shorten(e.get('input'))} is invalid: {_one_line(msg)[:MAX_VALUE_CHARS]}"


def line_of(lines: dict[tuple, int], path: str | tuple) -> int | None:
    """The line of field ``path`` (a dot path or its parts) in the study file, else of its nearest parent."""
    loc = tuple(path.split(".")) if isinstance(path, str) else path
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _given(raw: Any, loc: tuple) -> bool:
    """Whether the study (after ``--set``) gives field ``loc``, in nested mappings or as a dot-path key."""
    if not loc:
        return True
    if isinstance(raw, list):
        return loc[0].isdigit() and int(loc[0]) < len(raw) and _given(raw[int(loc[0])], loc[1:])
    if not isinstance(raw, dict):
        return False
    for n in range(len(loc), 0, -1):
        key = ".".join(loc[:n])
        if key in raw:
            return _given(raw[key], loc[n:])
    return False


class Problems:
    """Every problem found in a study, in the order found. ``add`` words one as ``<path> (line N): <message>``;
    the same message for several trials is said once, naming the first trial and how many more."""

    def __init__(
        self,
        source: str,
        lines: dict[tuple, int] | None = None,
        raw: dict[str, Any] | None = None,
        set_keys: list[str] | None = None,
    ):
        self.source, self.lines, self.raw = source, lines or {}, raw
        self.set_keys = [tuple(k.split(".")) for k in set_keys or []]
        self._found: dict[str, list[str]] = {}  # message -> the trials it applies to

    def where(self, path: str | tuple) -> str:
        """Where the value of field ``path`` came from, to follow it: `` (--set)`` when a ``--set`` gave it (also
        over a value of the file); `` (line N)`` of the file; `` (default)`` when the study does not give it; else
        (a list item, a section) the line of its nearest parent in the file."""
        loc = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
        dotted = tuple(".".join(loc).split("."))  # a dot-path key (variants, grid) as its parts
        if any(dotted[: len(k)] == k for k in self.set_keys):  # a --set wins over the file's line
            return " (--set)"
        if loc in self.lines:
            return f" (line {self.lines[loc]})"
        if self.raw is not None and not _given(self.raw, dotted):
            return " (default)"
        line = line_of(self.lines, loc)
        return f" (line {line})" if line else ""

    def add(self, path: str, msg: str, trial: str = "") -> None:
        names = self._found.setdefault(f"{path}{self.where(path)}: {msg}", [])
        if trial:
            names.append(trial)

    def say(self, text: str) -> None:
        """A problem already worded (a pydantic error, a trial's own check)."""
        self._found.setdefault(text, [])

    def __bool__(self) -> bool:
        return bool(self._found)

    def raise_any(self) -> None:
        """Raise StudyError with every problem found so far, if any."""
        if self._found:
            raise StudyError(
                self.source,
                [
                    text
                    + (f" (trial {names[0]}{f' and {len(names) - 1} more' if len(names) > 1 else ''})" if names else "")
                    for text, names in self._found.items()
                ],
            )


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = StudySpec
    for part in loc:
        sub = None
        if isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            sub = model.model_fields[part].annotation
        elif is_dataclass(model):
            sub = section(model, part)
        if sub is None:
            return []
        model = getattr(sub, "__args__", (sub,))[0] if getattr(sub, "__origin__", None) is Union else sub
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return [f.name for f in fields(model)] if is_dataclass(model) else []
