"""The model registry: content-addressed, immutable artifacts and an SQLite index of versions,
aliases (with an audit log), tags, metrics and lineage. See :class:`Registry`."""

from servekit.registry.records import AliasEvent, GcReport, ModelVersion, RegisteredModel
from servekit.registry.registry import (
    ALIAS_ACTIONS,
    FORMATS,
    REFUSED_ACTION,
    UNCHECKED,
    Registry,
    default_actor,
)
from servekit.registry.root import HOME_ENV, default_root

__all__ = [
    "ALIAS_ACTIONS",
    "FORMATS",
    "HOME_ENV",
    "REFUSED_ACTION",
    "UNCHECKED",
    "AliasEvent",
    "GcReport",
    "ModelVersion",
    "RegisteredModel",
    "Registry",
    "default_actor",
    "default_root",
]
