"""Writing a benchmark's results: JSON with the machine they were measured on."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write ``results`` to ``path`` as JSON, with the CPU count and processor added under
    ``machine``, creating the folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    path.write_text(json.dumps({"machine": machine, **results}, indent=2))
