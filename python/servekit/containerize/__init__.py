"""Containerize: an OCI build context (and, with an engine, an image) for a registry version."""

from servekit.containerize.context import BuildContext, default_base, write_context
from servekit.containerize.engine import build_image, find_engine

__all__ = ["BuildContext", "build_image", "default_base", "find_engine", "write_context"]
