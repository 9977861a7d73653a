"""The served models as the Models page shows them when a server has no registry (or next to
it): every model of the data plane's repository, its versions with their state, its config."""

from __future__ import annotations

from typing import Any

from servekit.serving.config import config_to_dict
from servekit.serving.dataplane import DataPlane


def served_view(plane: DataPlane) -> list[dict[str, Any]]:
    """One entry per model in the repository index: name, versions (state and reason) and
    the completed configuration in Triton's JSON form (None for a model that did not load)."""
    configs = {e.name: e.config for e in plane.repository.entries()}
    models: dict[str, dict[str, Any]] = {}
    for row in plane.repository_index():
        entry = models.setdefault(row["name"], {"name": row["name"], "versions": []})
        entry["versions"].append({k: row[k] for k in ("version", "state", "reason") if k in row})
    for name, entry in models.items():
        config = configs.get(name)
        entry["config"] = config_to_dict(config) if config is not None else None
    return list(models.values())
