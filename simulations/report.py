"""Progress lines while a long command works, then one readable table (or JSON).

Progress goes to stderr so ``--json`` output on stdout stays machine-readable.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


class Report:
    def __init__(self, title: str, *, as_json: bool = False) -> None:
        self.title = title
        self.as_json = as_json
        self.rows: list[dict[str, Any]] = []
        self._t0 = time.monotonic()

    def progress(self, message: str) -> None:
        print(f"[{time.monotonic() - self._t0:6.1f}s] {message}", file=sys.stderr, flush=True)

    def add(self, **row: Any) -> None:
        self.rows.append(row)

    def render(self) -> str:
        if self.as_json:
            return json.dumps({"title": self.title, "rows": self.rows}, indent=2, default=str)
        if not self.rows:
            return f"{self.title}: no results"
        columns: list[str] = []
        for row in self.rows:
            columns += [c for c in row if c not in columns]
        cells = [[_fmt(row.get(c, "")) for c in columns] for row in self.rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        line = "  ".join("-" * w for w in widths)
        out = [
            self.title,
            line,
            "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
            line,
        ]
        out += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
        out.append(line)
        return "\n".join(out)

    def finish(self) -> None:
        print(self.render(), flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e6:
            return f"{value:,.2f}"
        return f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
