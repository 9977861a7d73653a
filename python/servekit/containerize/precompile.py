"""Byte code for what ``servekit serve`` imports, and nothing else: run in an image's build stage.

The image installs its wheels with ``pip install --no-compile``: byte code for the whole of
site-packages is about 27 MB, most of it for modules a server never imports (numpy's tests,
ONNX Runtime's transformer and quantization tools...), while starting with no byte code at all
took about twice as long to listen (measured on a 2-core machine: 5.0 s against 2.4 s). So the
build stage runs ``python -m servekit.containerize.precompile`` with byte-code writing on: it
starts ``servekit serve`` (HTTP and gRPC on loopback ports, an empty model repository, so a
tampered artifact is still refused when the container starts, not here) until it prints its
listening line, and imports the modules named on its command line, which a server loads only
with its first model (the registry source, ONNX Runtime, torch). Python writes byte code for
every module imported on the way (about 9 MB).

    python -m servekit.containerize.precompile servekit.serving.registry_source onnxruntime

A server that does not reach its listening line within the deadline fails the build, with its
output: an image that cannot start should not be built.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

#: The line ``servekit serve`` prints once it listens (servekit.serving.rest.server).
LISTENING = "servekit: serving on "
DEADLINE_S = 300.0


def _watch(stream: IO[str], seen: threading.Event) -> None:
    """Return at the listening line (setting ``seen``) or at the end of the stream."""
    for line in stream:
        if line.startswith(LISTENING):
            seen.set()
            return


def warm_up(modules: Sequence[str], deadline_s: float = DEADLINE_S) -> None:
    """Start ``servekit serve`` on an empty model repository until it listens, then stop it,
    and import ``modules`` meanwhile, with byte-code writing on in both processes.

    Raises RuntimeError (with the server's output) when the server exits or does not listen
    within ``deadline_s`` seconds, and ModuleNotFoundError for a module that is not installed.
    """
    sys.dont_write_bytecode = False
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "stderr", "w+") as stderr:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        command = [sys.executable, "-m", "servekit", "serve", "--host", "127.0.0.1",
                   "--port", "0", "--grpc-port", "0", "--model-repo", str(repo)]  # fmt: skip
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=tmp
        )
        assert proc.stdout is not None
        seen = threading.Event()
        reader = threading.Thread(target=_watch, args=(proc.stdout, seen), daemon=True)
        reader.start()
        try:
            for name in modules:  # meanwhile, in this process
                importlib.import_module(name)
            reader.join(deadline_s)  # it returns at the listening line or the server's exit
            listened, exited = seen.is_set(), None
            if not listened and not reader.is_alive():  # its output ended: it is exiting
                exited = proc.wait(timeout=60)
        finally:
            # Killed, not drained: its imports are done, and Python writes each byte-code
            # file atomically (a temporary file renamed into place).
            proc.kill()
            proc.wait(timeout=60)
        if not listened:
            stderr.seek(0)
            what = (
                f"exited with status {exited} before it listened"
                if exited is not None
                else f"did not listen within {deadline_s:.0f} s"
            )
            raise RuntimeError(f"{' '.join(command)} {what}:\n{stderr.read()}")


def main() -> None:
    """Run :func:`warm_up` with the module names of the command line; exit with status 1 and
    the error when it fails."""
    try:
        warm_up(sys.argv[1:])
    except (RuntimeError, ModuleNotFoundError) as exc:
        sys.exit(f"servekit: error: {exc}")


if __name__ == "__main__":
    main()
