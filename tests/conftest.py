"""Shared fixtures."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real ``servekit`` command line in a subprocess, from a temporary directory."""

    def run(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "servekit", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"servekit {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run
