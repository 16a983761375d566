"""OUT/results.jsonl, the search's measurement cache: what makes an interrupted search resumable."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class ResultStore:
    """One JSON object per measurement, appended and fsync'd as it is taken."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill: that measurement is simply taken again
                if isinstance(rec, dict) and "key" in rec:
                    self.records[rec["key"]] = rec
        self.loaded = set(self.records)  # keys measured by earlier runs

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def append(self, rec: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            if f.tell() > 0:  # a previous kill may have left a partial line: start on a fresh one
                with open(self.path, "rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        f.write("\n")
            f.write(json.dumps(rec, default=_json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[rec["key"]] = rec


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):  # numpy scalars
        return x.item()
    return str(x)
