"""The web dashboard: pages under ``/ui`` and the JSON they read under ``/v2/ui/...``.

Every figure a page shows comes from one of the JSON routes (:mod:`servekit.ui.routes`), which
read the registry's Python API (:mod:`servekit.ui.registry_view`) and the data plane
(:mod:`servekit.ui.served_view`, :mod:`servekit.ui.live`, :mod:`servekit.ui.drift_view`); the
pages in ``static/`` only draw it. ``servekit serve`` mounts it next to the KServe routes;
``servekit ui`` serves it alone over a registry (:mod:`servekit.ui.standalone`).
"""

from servekit.ui.routes import UiSources, mount_ui

__all__ = ["UiSources", "mount_ui"]
