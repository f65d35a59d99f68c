"""Who is calling: the tenant an API key is bound to, and the scopes it holds."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from shared.auth.models import Scope
from shared.errors import Forbidden


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant the key is bound to and what it may do."""

    tenant_id: str
    key_id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    phone_region: str | None = None  # the tenant's own; None: the shared WAYPOINT_PHONE_REGION

    def allows(self, scope: Scope | str) -> bool:
        return Scope.admin.value in self.scopes or str(scope) in self.scopes

    def region(self, default: str) -> str:
        """Country of this tenant's phone numbers written without a +country code."""
        return self.phone_region or default

    def require(self, *scopes: Scope | str) -> None:
        """Pass if the key holds any of ``scopes`` (``admin`` holds them all)."""
        if not any(self.allows(s) for s in scopes):
            wanted = " or ".join(str(s) for s in scopes)
            raise Forbidden(f"this API key lacks the {wanted} scope")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
