"""In-process read-through cache of context documents, invalidated by NOTIFY.

Every change to a customer's context or to which customer an identifier resolves to is
NOTIFYed inside the changing transaction (worker, merge, split, agent fact), so PostgreSQL tells
every API process after the commit. The cache drops the customer's entries on each notice and
empties itself whenever the LISTEN connection is lost, so a hit is never staler than the notice
delay. A read that raced with a notice is not stored (``token`` check).
Only identifiers with a single holder are cached; documents are kept as JSON text, bounded by
bytes (LRU).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict

from prometheus_client import Counter

CACHE = Counter(
    "waypoint_journey_context_cache_total", "Context cache look-ups by result.", ["result"]
)

_HIT, _MISS = CACHE.labels("hit"), CACHE.labels("miss")
Key = tuple[str, uuid.UUID]
IdKey = tuple[str, str, str]
_NOTICES_KEPT = 100_000


class ContextCache:
    def __init__(self, max_bytes: int, max_identifiers: int = 1_000_000):
        self.max_bytes = max_bytes
        self.max_identifiers = max_identifiers
        self.enabled = False  # only while the LISTEN connection is up
        self._docs: OrderedDict[Key, tuple[int, str]] = OrderedDict()
        self._bytes = 0
        self._ids: OrderedDict[IdKey, uuid.UUID] = OrderedDict()
        self._ids_of: dict[Key, set[IdKey]] = {}
        self._noticed: OrderedDict[Key, int] = OrderedDict()
        self._seq = 0
        self._floor = 0  # reads started before this may not be stored

    def token(self) -> int:
        """Take before reading the database; hand to ``put``."""
        return self._seq

    def customer(self, tenant: str, id_type: str, value: str) -> uuid.UUID | None:
        cid = self._ids.get((tenant, id_type, value)) if self.enabled else None
        if cid is not None:
            self._ids.move_to_end((tenant, id_type, value))
        return cid

    def document(self, key: Key) -> tuple[int, str] | None:
        entry = self._docs.get(key) if self.enabled else None
        (_HIT if entry else _MISS).inc()
        if entry is not None:
            self._docs.move_to_end(key)
        return entry

    def put(
        self, key: Key, version: int, doc: str, token: int, identifier: IdKey | None = None
    ) -> None:
        if not self.enabled or self.max_bytes <= 0 or token < self._floor:
            return
        if self._noticed.get(key, -1) > token:
            return  # a change was announced while we were reading: do not keep the old one
        old = self._docs.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])
        self._docs[key] = (version, doc)
        self._bytes += len(doc)
        while self._bytes > self.max_bytes and self._docs:
            evicted, (_, text) = self._docs.popitem(last=False)
            self._bytes -= len(text)
            self._drop_ids(evicted)
        if identifier is not None and key in self._docs:
            self._ids[identifier] = key[1]
            self._ids_of.setdefault(key, set()).add(identifier)
            while len(self._ids) > self.max_identifiers:
                old_id, cid = self._ids.popitem(last=False)
                self._ids_of.get((old_id[0], cid), set()).discard(old_id)

    def invalidate(self, key: Key) -> None:
        self._seq += 1
        self._noticed[key] = self._seq
        self._noticed.move_to_end(key)
        while len(self._noticed) > _NOTICES_KEPT:
            _, seq = self._noticed.popitem(last=False)
            self._floor = max(self._floor, seq)
        old = self._docs.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])
        self._drop_ids(key)

    def clear(self) -> None:
        self._seq += 1
        self._floor = self._seq
        self._docs.clear()
        self._ids.clear()
        self._ids_of.clear()
        self._noticed.clear()
        self._bytes = 0

    def _drop_ids(self, key: Key) -> None:
        for identifier in self._ids_of.pop(key, ()):
            self._ids.pop(identifier, None)
