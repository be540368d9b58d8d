"""The documentation, checked against the code and the repository: the configuration reference lists every
setting with its real default, every relative link points to a file, the README stays a five-minute read,
and no Markdown file tells how the project was developed instead of what the software is."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DOC = ROOT / "docs" / "configuration.md"
README_MAX_LINES = 150  # a five-minute read; reference material belongs in docs/

SETTING_ROW = re.compile(r"^\|\s*`([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)`\s*\|([^|]*)\|")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HISTORY = [re.compile(p, re.IGNORECASE) for p in (r"\(issue \d+\)", r"issue #?\d+", r"lent to this task", r"this task")]


def parse_default(text: str) -> Any:
    """A default as docs/configuration.md writes it, back as Python: ``null``, ``true``/``false``, numbers as
    Python prints them, ``[a, b]`` lists, anything else a string (written without quotes)."""
    text = text.strip().strip("`").strip()
    if text == "null":
        return None
    if text in ("true", "false"):
        return text == "true"
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [parse_default(item) for item in inner.split(",")] if inner else []
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def same(documented: Any, actual: Any) -> bool:
    """Equal and of the same type (so ``1`` does not stand for ``True``, nor ``30.0`` for ``30``)."""
    if isinstance(actual, (list, tuple)):
        return (
            isinstance(documented, list)
            and len(documented) == len(actual)
            and all(same(d, a) for d, a in zip(documented, actual))
        )
    return type(documented) is type(actual) and documented == actual


def documented_settings() -> list[tuple[str, str]]:
    """(dot path, default text) of every row of the setting tables in docs/configuration.md."""
    rows = []
    for line in CONFIG_DOC.read_text(encoding="utf-8").splitlines():
        match = SETTING_ROW.match(line.strip())
        if match:
            rows.append((match.group(1), match.group(2).strip()))
    return rows


def test_configuration_reference_matches_the_dataclasses():
    from mto.config import setting_defaults

    defaults = setting_defaults()
    rows = documented_settings()
    paths = [path for path, _ in rows]
    duplicated = sorted({p for p in paths if paths.count(p) > 1})
    assert not duplicated, f"docs/configuration.md lists these settings more than once: {duplicated}"
    missing = sorted(set(defaults) - set(paths))
    assert not missing, "settings of TrialConfig missing from docs/configuration.md: " + ", ".join(
        f"{p} (default {defaults[p]!r})" for p in missing
    )
    extra = sorted(set(paths) - set(defaults))
    assert not extra, f"docs/configuration.md lists settings TrialConfig does not have: {extra}"
    wrong = [
        f"{path}: docs/configuration.md says {text!r} (read as {parse_default(text)!r}), "
        f"the dataclass default is {defaults[path]!r}"
        for path, text in rows
        if not same(parse_default(text), defaults[path])
    ]
    assert not wrong, "defaults in docs/configuration.md differ from the code:\n" + "\n".join(wrong)


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(text: str) -> list[str]:
    """Link and image targets outside code, without web links, pure anchors and #fragments."""
    text = INLINE_CODE.sub("", FENCE.sub("", text))
    out = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # http(s), mailto: and other schemes; anchors within the page
        out.append(target.split("#", 1)[0])
    return out


def test_relative_links_point_to_existing_files():
    broken = []
    for md in markdown_files():
        for target in relative_links(md.read_text(encoding="utf-8")):
            resolved = (md.parent / target.replace("%20", " ")).resolve()
            if not resolved.exists():
                broken.append(f"{md.relative_to(ROOT)}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_readme_is_a_five_minute_read():
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move reference material to docs/"
    )


def test_no_development_history_in_markdown():
    tracked = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "README.md" in tracked
    found = []
    for name in tracked:
        path = ROOT / name
        if not path.is_file():  # deleted or moved in the working tree
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found += [
                f"{name}:{number}: {pattern.pattern!r} in {line.strip()!r}"
                for pattern in HISTORY
                if pattern.search(line)
            ]
    assert not found, "development history in the docs (say what the software is instead):\n" + "\n".join(found)
