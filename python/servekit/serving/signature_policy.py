"""What serving does with registry versions' signatures: ``enforce``, ``warn`` or ``off``.

- ``enforce``: a version that is unsigned, or whose signature does not verify against the
  trusted key (another key, a tampered signature or artifact), is never served; the reason
  is logged and recorded as the version's load failure, which the model's state shows.
- ``warn``: such a version is served; a log line says why, and the counter
  ``servekit_signature_failures_total{model, policy}`` counts it.
- ``off``: signatures are not read.

Only registry models (``--model``) carry signatures; model-repository directories do not.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from prometheus_client import Counter

from servekit.errors import InvalidArgumentError
from servekit.signing.registry import verify_version
from servekit.signing.sign import SignatureError

if TYPE_CHECKING:
    from servekit.registry import ModelVersion, Registry

log = logging.getLogger("servekit.serving")

Mode = Literal["enforce", "warn", "off"]
MODES: tuple[Mode, ...] = ("enforce", "warn", "off")

SIGNATURE_FAILURES = Counter(
    "servekit_signature_failures",
    "Registry versions whose signature was missing or did not verify when they loaded",
    ["model", "policy"],
)


@dataclass(frozen=True)
class SignaturePolicy:
    """The policy and the public key versions must be signed with."""

    mode: Mode
    trusted_key: Path | None

    @classmethod
    def from_options(
        cls, mode: str | None, trusted_key: str | os.PathLike[str] | None
    ) -> SignaturePolicy:
        """The policy of ``--signature-policy`` and ``--trusted-key``: enforce when only a key
        is given, off when neither. Raises InvalidArgumentError for an unknown mode, enforce
        or warn without a key, a key with ``off`` (it would be ignored), or a missing key."""
        chosen = mode or ("enforce" if trusted_key is not None else "off")
        if chosen not in MODES:
            raise InvalidArgumentError(
                f"--signature-policy {chosen!r}: expected one of {', '.join(MODES)}"
            )
        if chosen != "off" and trusted_key is None:
            raise InvalidArgumentError(f"--signature-policy {chosen} needs --trusted-key PUBLIC")
        if chosen == "off" and trusted_key is not None:
            raise InvalidArgumentError(
                "--trusted-key is ignored under --signature-policy off: drop one of them"
            )
        key = Path(trusted_key) if trusted_key is not None else None
        if key is not None and not key.is_file():
            raise InvalidArgumentError(f"--trusted-key {os.fspath(key)!r} does not exist")
        return cls(chosen, key)  # type: ignore[arg-type]

    def check(self, registry: Registry, version: ModelVersion) -> None:
        """Apply the policy to ``version`` before it loads. Raises SignatureError (enforce)
        naming the version and the reason; under warn logs and counts instead."""
        if self.mode == "off" or self.trusted_key is None:
            return
        try:
            verify_version(registry, version.ref, self.trusted_key)
        except SignatureError as exc:
            if self.mode == "enforce":
                raise SignatureError(f"refused by --signature-policy enforce: {exc}") from None
            SIGNATURE_FAILURES.labels(version.name, self.mode).inc()
            log.warning("%s served despite its signature (--signature-policy warn): %s",
                        version.ref, exc)  # fmt: skip
