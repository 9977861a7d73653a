"""servekit: package, register, benchmark, promote, serve and monitor ML models.

The stages live in their own subpackages (``servekit.hashing``, ``servekit.registry``, ...);
the command line (``servekit``) is a thin layer over them.
"""

from servekit._core import __version__
from servekit.errors import ServekitError

__all__ = ["ServekitError", "__version__"]
