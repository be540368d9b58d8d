"""What the driver writes to its own disk: JSON as it stores it, and trial names as file and folder names."""

from __future__ import annotations

import json
from typing import Any


def safe_name(name: str) -> str:
    """A trial name as a file or folder name: letters, digits and ``-_.=`` kept, the rest ``_``, 120 at most."""
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)[:120]


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)  # insertion order: trials stay in the study's order
