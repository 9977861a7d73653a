"""The KServe v2 / Triton HTTP adapter (FastAPI on uvicorn) over the data plane."""

from servekit.serving.rest.app import create_app
from servekit.serving.rest.server import ServerOptions, bind, serve

__all__ = ["ServerOptions", "bind", "create_app", "serve"]
