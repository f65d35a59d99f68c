"""Customer identifiers: their types, how they were verified, and how values are normalized.

Normalization is the single definition used by ingest (on the way in) and by journey (for
look-ups such as a screen pop by phone), so the same person always yields the same key.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum
from functools import lru_cache

import phonenumbers


class IdentifierType(StrEnum):
    phone = "phone"
    email = "email"
    crm_id = "crm_id"
    user_id = "user_id"  # an application's user id (Segment ``userId``)
    account_id = "account_id"
    chat_session = "chat_session"
    social = "social"  # social handle, e.g. "twitter:@alice"
    messenger = "messenger"  # messenger id, e.g. "whatsapp:+4915…" or "telegram:12345"
    device_id = "device_id"
    anonymous_id = "anonymous_id"  # cookie / SDK anonymous id (Segment ``anonymousId``)


class Verification(StrEnum):
    """How an identifier was tied to the person, strongest first."""

    login = "login"  # verified login / SSO
    otp = "otp"  # one-time password to that phone / e-mail
    ivr_pin = "ivr_pin"  # PIN or knowledge check in the IVR
    document = "document"  # ID document checked
    agent = "agent"  # an agent confirmed it in conversation
    caller_id = "caller_id"  # network caller ID (spoofable)
    cookie = "cookie"  # browser cookie / device fingerprint
    self_asserted = "self_asserted"  # the customer typed it, nothing checked
    none = "none"


VERIFICATION_STRENGTH: dict[Verification, int] = {
    Verification.login: 100,
    Verification.otp: 90,
    Verification.ivr_pin: 85,
    Verification.document: 80,
    Verification.agent: 60,
    Verification.caller_id: 30,
    Verification.cookie: 20,
    Verification.self_asserted: 15,
    Verification.none: 10,
}
STRONG_VERIFICATION = 80  # at or above: strong enough to merge two known customers


def verification_strength(v: Verification | None) -> int:
    return VERIFICATION_STRENGTH[v or Verification.none]


# Values that identify nobody: withheld caller IDs, placeholders, test data.
_JUNK_TEXT = {
    "",
    "anonymous",
    "unknown",
    "unavailable",
    "private",
    "withheld",
    "restricted",
    "null",
    "none",
    "n/a",
    "na",
    "undefined",
    "test",
    "noreply",
    "no-reply",
    "guest",
}
_JUNK_EMAIL_LOCAL = {"noreply", "no-reply", "donotreply", "do-not-reply", "test", "example"}
_JUNK_EMAIL_DOMAINS = {"example.com", "example.org", "example.net", "test.com", "invalid"}
_REPEATED_DIGIT = re.compile(r"^\+?(\d)\1{5,}$")
_PHONE_CHARS = re.compile(r"^[\d\s+().-]+$")
_SEQUENTIAL = {"1234567", "12345678", "123456789", "1234567890", "0123456789"}


def is_junk_value(id_type: IdentifierType, value: str) -> bool:
    """True for values that must never link customers (``0000000``, ``anonymous``, …)."""
    v = value.strip().lower()
    if v in _JUNK_TEXT:
        return True
    if id_type is IdentifierType.phone:
        digits = re.sub(r"\D", "", v)
        national = digits[-10:]
        return (
            len(digits) < 5
            or bool(_REPEATED_DIGIT.match(digits))
            or bool(_REPEATED_DIGIT.match(national))
            or national in _SEQUENTIAL
            or digits in _SEQUENTIAL
        )
    if id_type is IdentifierType.email:
        local, _, domain = v.partition("@")
        return local in _JUNK_EMAIL_LOCAL or domain in _JUNK_EMAIL_DOMAINS
    return False


class InvalidIdentifier(ValueError):
    pass


DEFAULT_PHONE_REGION = "US"
# Regions a national number can be read in (``001``, the non-geographic code, cannot).
PHONE_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)


def normalize_region(value: str) -> str:
    """A phone region as ``phonenumbers`` names it (``RU``, ``CN``); raises ``ValueError``."""
    region = value.strip().upper()
    if region not in PHONE_REGIONS:
        raise ValueError(
            f"unknown phone region {value!r}: use a two-letter country code such as US, RU or CN"
        )
    return region


@lru_cache(maxsize=65536)
def normalize_phone(value: str, default_region: str = DEFAULT_PHONE_REGION) -> str:
    """E.164 (``+14155550123``); junk such as ``anonymous`` is kept lower-cased, to be flagged.

    Only numbers ``phonenumbers`` holds valid are accepted: a number that merely has a possible
    length (``138 0013 8000`` read as a US number is ``+13800138000``, which no one can have)
    would link whoever else typed the same digits.
    """
    raw = value.strip()
    if raw.lower() in _JUNK_TEXT:
        return raw.lower()
    if _PHONE_CHARS.match(raw) and is_junk_value(IdentifierType.phone, raw):
        return re.sub(r"[^\d+]", "", raw)  # kept (and flagged by is_junk_value), never linked
    try:
        number = phonenumbers.parse(raw, default_region.upper())
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentifier(f"not a phone number: {raw!r}") from exc
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not phonenumbers.is_valid_number(number):
        read_as = (
            ""
            if raw.startswith("+")
            else f" (read in region {default_region.upper()} as {e164}; a number from elsewhere "
            "needs its +country code)"
        )
        raise InvalidIdentifier(f"not a valid phone number: {raw!r}{read_as}")
    return e164


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(value: str) -> str:
    v = unicodedata.normalize("NFKC", value).strip().lower()
    if v.startswith("mailto:"):
        v = v[len("mailto:") :]
    if not _EMAIL.match(v):
        raise InvalidIdentifier(f"not an e-mail address: {value!r}")
    return v


def normalize_identifier(
    id_type: IdentifierType, value: str, *, default_region: str = DEFAULT_PHONE_REGION
) -> str:
    """The canonical form of one identifier value; raises ``InvalidIdentifier``."""
    if id_type is IdentifierType.phone:
        return normalize_phone(value, default_region)
    if id_type is IdentifierType.email:
        return normalize_email(value)
    v = unicodedata.normalize("NFKC", value).strip()
    if id_type is IdentifierType.social:
        v = v.lower()  # handles are case-insensitive on every major network
    if not v:
        raise InvalidIdentifier(f"empty {id_type.value}")
    if len(v) > 256:
        raise InvalidIdentifier(f"{id_type.value} longer than 256 characters")
    return v
