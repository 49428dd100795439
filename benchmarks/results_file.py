"""Where a benchmark's results go: one JSON and one Markdown file beside each other."""

import datetime as dt
import json
import os
import platform
from pathlib import Path


def stamped(args, **fields) -> dict:
    """The results' header (when, on what machine, with which arguments) and ``fields``."""
    return {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "args": vars(args),
            **fields}


def write_results(prefix: str, out: dict, markdown: str) -> None:
    """``<prefix>.json`` and ``<prefix>.md`` (folders made as needed); prints the Markdown."""
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    Path(prefix + ".json").write_text(json.dumps(out, indent=2))
    Path(prefix + ".md").write_text(markdown)
    print(markdown)
