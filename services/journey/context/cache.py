"""In-process read-through cache of context documents, invalidated by NOTIFY.

Every change to a customer's context or to which customer an identifier resolves to is
NOTIFYed inside the changing transaction (worker, merge, split, agent fact), so PostgreSQL tells
every API process after the commit. The cache drops the customer's entries on each notice and
empties itself whenever the LISTEN connection is lost, so a hit is never staler than the notice
delay. A read that raced with a notice is not stored (``token`` check).
Only identifiers with a single holder are cached; documents are kept as JSON text, bounded by
bytes (LRU).

Beside a document, its rendered screen-pop card (the masked JSON body an agent gets, never a
revealed one) may be kept (``put_card``; the screen pop keeps it when the document was already
here, i.e. from a customer's second pop on): it lives and dies with its document's entry, so every
notice, eviction, replacement or ``clear`` that drops the document drops the card with it, and
a card is only stored against the very entry it was rendered from. It also carries the instant
the clock alone would change it (a fact expiring, "5 min ago" turning "6 min ago":
``views.horizon``), and is not served from then on. Cards count against the same byte bound.
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
Entry = tuple[int, str]  # (version, document as JSON text)
_NOTICES_KEPT = 100_000


class ContextCache:
    def __init__(self, max_bytes: int, max_identifiers: int = 1_000_000):
        self.max_bytes = max_bytes
        self.max_identifiers = max_identifiers
        self.enabled = False  # only while the LISTEN connection is up
        self._docs: OrderedDict[Key, Entry] = OrderedDict()
        self._cards: dict[Key, tuple[float, bytes]] = {}  # (valid until, epoch s; masked body)
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

    def document(self, key: Key) -> Entry | None:
        entry = self._docs.get(key) if self.enabled else None
        (_HIT if entry else _MISS).inc()
        if entry is not None:
            self._docs.move_to_end(key)
        return entry

    def entry(self, key: Key) -> Entry | None:
        """The entry ``document`` would return, without counting a look-up."""
        return self._docs.get(key) if self.enabled else None

    def put(
        self, key: Key, version: int, doc: str, token: int, identifier: IdKey | None = None
    ) -> Entry | None:
        """Keep a document read with ``token``; returns the entry kept (None: not kept)."""
        if not self.enabled or self.max_bytes <= 0 or token < self._floor:
            return None
        if self._noticed.get(key, -1) > token:
            return None  # a change was announced while we were reading: do not keep the old one
        self._drop_doc(key)
        entry = self._docs[key] = (version, doc)
        self._bytes += len(doc)
        self._evict()
        if identifier is not None and key in self._docs:
            self._ids[identifier] = key[1]
            self._ids_of.setdefault(key, set()).add(identifier)
            while len(self._ids) > self.max_identifiers:
                old_id, cid = self._ids.popitem(last=False)
                self._ids_of.get((old_id[0], cid), set()).discard(old_id)
        return entry if self._docs.get(key) is entry else None

    def invalidate(self, key: Key) -> None:
        self._seq += 1
        self._noticed[key] = self._seq
        self._noticed.move_to_end(key)
        while len(self._noticed) > _NOTICES_KEPT:
            _, seq = self._noticed.popitem(last=False)
            self._floor = max(self._floor, seq)
        self._drop_doc(key)
        self._drop_ids(key)

    def card(self, tenant: str, id_type: str, value: str, now: float) -> bytes | None:
        """The rendered card of the customer holding this identifier, if kept and still valid
        at ``now`` (epoch seconds). Counted as a hit of its document."""
        if not self.enabled:
            return None
        identifier = (tenant, id_type, value)
        cid = self._ids.get(identifier)
        if cid is None:
            return None
        key = (tenant, cid)
        card = self._cards.get(key)
        if card is None or card[0] <= now:
            return None
        self._ids.move_to_end(identifier)
        self._docs.move_to_end(key)
        _HIT.inc()
        return card[1]

    def put_card(self, key: Key, entry: Entry, until: float, body: bytes) -> None:
        """Keep ``body``, rendered from ``entry`` (as ``document`` returned it), until ``until``
        (epoch seconds; ``math.inf`` when the clock changes nothing in it). Ignored unless
        ``entry`` is still the customer's current entry: a card never outlives its document."""
        if not self.enabled or self._docs.get(key) is not entry:
            return
        old = self._cards.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])
        self._cards[key] = (until, body)
        self._bytes += len(body)
        self._evict()

    def clear(self) -> None:
        self._seq += 1
        self._floor = self._seq
        self._docs.clear()
        self._cards.clear()
        self._ids.clear()
        self._ids_of.clear()
        self._noticed.clear()
        self._bytes = 0

    def _drop_doc(self, key: Key) -> None:
        old = self._docs.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])
        card = self._cards.pop(key, None)
        if card is not None:
            self._bytes -= len(card[1])

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._docs:
            evicted = next(iter(self._docs))
            self._drop_doc(evicted)
            self._drop_ids(evicted)

    def _drop_ids(self, key: Key) -> None:
        for identifier in self._ids_of.pop(key, ()):
            self._ids.pop(identifier, None)
