"""Reading the training files: one JSON object a line, each checked as it is read."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def read_jsonl(path: Path, parse: Callable[[Any], dict], what: str) -> list[dict]:
    """`parse(row)` of every non-blank line of `path`. Raises ValueError naming the line that is not `what` (a line
    that is no JSON, or that `parse` refuses with ValueError, KeyError or TypeError)."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(parse(json.loads(line)))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{number}: not {what} ({e})") from e
    return rows
