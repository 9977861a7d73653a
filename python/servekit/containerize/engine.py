"""Building a context with the container engine found on PATH: podman, else docker."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from servekit.errors import NotFoundError, ServekitError

#: Engines tried in order: podman first, since it needs no daemon.
ENGINES = ("podman", "docker")


def find_engine() -> str:
    """The path of podman or docker, whichever is found first. Raises NotFoundError when
    neither is on PATH."""
    for name in ENGINES:
        found = shutil.which(name)
        if found:
            return found
    raise NotFoundError(
        "neither podman nor docker is on PATH: install one, or build the context "
        "with any OCI builder (it is a plain Dockerfile)"
    )


def build_command(engine: str, context: Path, tag: str) -> list[str]:
    """The build command line: offline (``--network none``), and with podman in the docker
    image format, the one that keeps HEALTHCHECK (OCI images drop it)."""
    containerfile = context / "Containerfile"
    command = [engine, "build", "--network", "none", "-t", tag, "-f", str(containerfile)]
    if Path(engine).name == "podman":
        command += ["--format", "docker"]
    return [*command, str(context)]


def build_image(context: Path, tag: str) -> list[str]:
    """Build ``context`` as image ``tag``, the engine's output going to this process's
    stdout/stderr; return the command that ran. Raises NotFoundError (no engine) and
    ServekitError when the build fails."""
    command = build_command(find_engine(), context, tag)
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise ServekitError(f"{' '.join(command)} failed with exit status {result.returncode}")
    return command
