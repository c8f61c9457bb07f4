"""Run benchmark code in a fresh interpreter: what every ``bench/*.py`` script times."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


class ChildFailed(RuntimeError):
    """A benchmark child exited with an error (its last error line is the message)."""


def run(code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter (``args`` as its ``sys.argv[1:]``); its last line.

    A failing child's error output (its end) goes to stderr, then :class:`ChildFailed`.
    """
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-3000:])
        last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
        raise ChildFailed(last or f"exit code {out.returncode}")
    return out.stdout.strip().splitlines()[-1]


def run_json(code: str, *args: str) -> Any:
    """:func:`run`, its last line read as JSON."""
    return json.loads(run(code, *args))
