"""Where a Prometheus lives and how to authenticate to it, as plain values the handlers fill in.

The sources layer must not import Kubernetes, so the handlers read the Secrets and pass the secret material in
here. Kept apart from the client so the runner, `lint` and `simulate` can name an endpoint without importing an
HTTP client.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Auth:
    """Secret material already resolved by the caller (handlers read the Secrets, not this layer)."""

    bearer_token: str | None = None
    basic: tuple[str, str] | None = None
    ca_pem: str | None = None
    insecure_skip_verify: bool = False

    def __repr__(self) -> str:
        # Endpoints end up in log lines and exception messages; only say *whether* a secret is set.
        def shown(value: object) -> str:
            return "<set>" if value else "None"

        return (
            f"Auth(bearer_token={shown(self.bearer_token)}, basic={shown(self.basic)}, "
            f"ca_pem={shown(self.ca_pem)}, insecure_skip_verify={self.insecure_skip_verify})"
        )

    def secrets(self) -> list[str]:
        """Every string that must never appear in an error message, in the forms it could leak in."""
        found: list[str] = []
        if self.bearer_token:
            found.append(self.bearer_token)
        if self.basic:
            user, password = self.basic
            if password:
                found.append(password)
            # A server echoing the Authorization header would leak the pair base64-encoded.
            found.append(base64.b64encode(f"{user}:{password}".encode()).decode("ascii"))
        return found


@dataclass(frozen=True)
class Endpoint:
    """Where a Prometheus lives and how to authenticate to it; hashable so clients can be cached per
    endpoint."""

    url: str
    auth: Auth = field(default_factory=Auth)


__all__ = ["Auth", "Endpoint"]
