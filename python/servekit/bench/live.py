"""Live evidence for promotion gates: a running server's figures for a candidate.

``servekit promote NAME:V --from-server URL`` reads ``GET URL/v2/models/NAME/candidates`` and
finds the candidate running version V (as a shadow or canary). Its figures become the gate
metrics ``live.*`` of the candidate, and production's side of the same figures becomes
``ALIAS.live.*`` for the alias production is served as:

=====================  ========================================================================
``live.requests``      requests compared (shadow) or answered (canary)
``live.rows``          rows compared (shadow)
``live.sampled``       requests sampled for a shadow; ``live.dropped``: dropped (queue full)
``live.errors``        failed candidate requests; ``live.error_rate``: errors / attempts
``live.agreement``     share of rows where every classifier output agreed with production
``live.agreement_O``   the same for output ``O`` alone
``live.abs_error_pQ``  worst of the float outputs' absolute error quantile (Q: 50, 90, 99; also
                       ``_max``); ``live.rel_error_pQ`` the relative one
``live.latency_pQ_ms`` the candidate's request latency quantile (Q: 50, 90, 99)
``live.seconds``       seconds the figures cover
``live.drift_detected``  1 when the candidate's drift window shows drift, else 0 (monitored only)
=====================  ========================================================================

Production's side: ``ALIAS.live.latency_pQ_ms`` (production's latency over the same window).
A figure that is not known yet (no rows compared) is left out, so a gate reading it fails with
the reason.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from servekit.errors import InvalidArgumentError, NotFoundError, UnavailableError

_QUANTILES = ("p50", "p90", "p99")


@dataclass(frozen=True)
class LiveEvidence:
    """What a server measured for one candidate version: the figures of both sides."""

    url: str
    model: str
    version: int
    role: str | None
    production_version: int | None
    candidate: dict[str, float] = field(default_factory=dict)
    production: dict[str, float] = field(default_factory=dict)

    def describe(self, names: list[str]) -> str:
        """``live figures from URL (role, production version P): name=value, ...`` for the
        figures in ``names`` (as gates spell them)."""
        values = []
        for name in names:
            scope = self.candidate if name.startswith("live.") else self.production
            metric = name if name.startswith("live.") else name.split(".", 1)[1]
            value = scope.get(metric)
            values.append(f"{name}={'missing' if value is None else format(value, '.6g')}")
        where = (
            f"{self.role} of production version {self.production_version}"
            if self.role
            else "not a candidate there"
        )
        return f"live figures from {self.url} ({where}): " + ", ".join(values)


def _get(url: str, timeout_s: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        if exc.code == 404:
            raise NotFoundError(f"{url}: {message}") from None
        raise UnavailableError(f"{url}: HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UnavailableError(f"cannot read live figures from {url}: {reason}") from None
    except ValueError as exc:
        raise UnavailableError(f"{url} did not answer JSON: {exc}") from None


def _put(scope: dict[str, float], name: str, value: Any) -> None:
    if isinstance(value, int | float):  # bool too: drift_detected counts as 1 or 0
        scope[name] = float(value)


def figures_of(report: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """The ``live.*`` metrics of one candidate read-out, and production's side of them."""
    cand: dict[str, float] = {}
    prod: dict[str, float] = {}
    for key in ("requests", "rows", "sampled", "dropped", "errors", "error_rate", "seconds"):
        _put(cand, f"live.{key}", report.get(key))
    _put(cand, "live.agreement", report.get("agreement"))
    floats = []
    for name, out in (report.get("outputs") or {}).items():
        _put(cand, f"live.agreement_{name}", out.get("agreement"))
        if "abs_error" in out:
            floats.append(out)
    for kind in ("abs_error", "rel_error"):
        for q in (*_QUANTILES, "max"):
            values = [o[kind][q] for o in floats if o[kind].get(q) is not None]
            if values:
                cand[f"live.{kind}_{q}"] = float(max(values))
    latency = report.get("latency_ms") or {}
    for side, scope in (("candidate", cand), ("production", prod)):
        for q in _QUANTILES:
            _put(scope, f"live.latency_{q}_ms", (latency.get(side) or {}).get(q))
    drift = report.get("drift") or {}
    if drift.get("monitored"):
        _put(cand, "live.drift_detected", drift.get("drift_detected"))
    return cand, prod


def read_live(url: str, model: str, version: int, *, timeout_s: float = 10.0) -> LiveEvidence:
    """The server's figures for version ``version`` of ``model``. A version that is not a
    candidate there gives empty figures (its live gates then fail, saying so). Raises
    InvalidArgumentError for a URL that is not http(s), NotFoundError when the server does not
    serve the model, UnavailableError when it cannot be reached or answers an error."""
    base = url.rstrip("/")
    if "://" not in base:
        base = "http://" + base
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise InvalidArgumentError(f"--from-server {url!r}: expected http://HOST:PORT")
    body = _get(f"{base}/v2/models/{urllib.parse.quote(model, safe='')}/candidates", timeout_s)
    production = body.get("production_version")
    production_version = int(production) if production is not None else None
    for report in body.get("candidates", []):
        if report.get("version") == str(version):
            cand, prod = figures_of(report)
            return LiveEvidence(
                base, model, version, report.get("role"), production_version, cand, prod
            )
    return LiveEvidence(base, model, version, None, production_version)
