"""Simulated people and B2B accounts, derived deterministically from (seed, index)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

FIRST_NAMES = (
    "alice bob carmen dmitri elena farid grace hiro ines jamal kira liam maria nikolai olga "
    "pedro qing rosa sven tanya umar vera wei xenia yusuf zoe anna boris chen daria emil fatima "
    "igor julia kofi lena mikhail nadia oscar priya rafael sofia timur ulla viktor"
).split()
LAST_NAMES = (
    "smith ivanova garcia chen mueller rossi kowalski nguyen petrov silva haddad tanaka "
    "johnson novak andersen okafor fischer lopez wang kuznetsova dubois moreau singh ali"
).split()
MAIL_DOMAINS = ("inbox.test", "mailhub.test", "postbox.test", "webmail.test")
COMPANIES = (
    "acme-logistics northwind globex initech umbrella-foods stark-retail wayne-health "
    "tyrell-media soylent hooli vandelay piedpiper"
).split()
AREA_CODES = ("212", "312", "415", "503", "617", "646", "702", "713", "818", "917")
AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
REGIONS = ("na", "emea", "apac", "latam")
CONSUMER_TIERS = ("standard", "standard", "standard", "premium", "vip")
ACCOUNT_TIERS = ("smb", "smb", "mid_market", "enterprise")
LIFECYCLE = ("new", "onboarding", "active", "active", "loyal")
CSM_OWNERS = ("csm-ana", "csm-ben", "csm-chloe", "csm-dev", "csm-emma")

# Customers 0..2 of every block of 10 are contacts of one B2B account (index // 10).
ACCOUNT_BLOCK = 10
CONTACTS_PER_ACCOUNT = 3


@dataclass(frozen=True, slots=True)
class Account:
    index: int
    account_id: str
    company: str
    tier: str
    region: str
    csm_owner: str
    purchased_seats: int
    declining: bool  # usage falls over the simulated period
    outcome: str | None  # "churned", "renewed" or still running (None)


@dataclass(slots=True)
class Person:
    index: int
    name: str
    email: str
    email_as_typed: str  # how the person types it (case varies; ingest lower-cases it)
    phone: str  # E.164
    phone_as_dialled: str  # sometimes national format; ingest normalizes to E.164
    social: str
    messenger: str
    crm_id: str | None  # None: not (yet) a known customer
    device_id: str
    traits: dict[str, str | int | float | bool | None] = field(default_factory=dict)
    account: Account | None = None


def account_for(seed: int, index: int) -> Account | None:
    """The B2B account customer ``index`` belongs to, if any."""
    if index % ACCOUNT_BLOCK >= CONTACTS_PER_ACCOUNT:
        return None
    number = index // ACCOUNT_BLOCK
    rng = random.Random(seed * 7_919 + number)
    company = rng.choice(COMPANIES)
    declining = rng.random() < 0.35
    roll = rng.random()
    if declining:
        outcome = "churned" if roll < 0.55 else None
    else:
        outcome = "renewed" if roll < 0.45 else None
    return Account(
        index=number,
        account_id=f"acct-{seed}-{number:05d}",
        company=company,
        tier=rng.choice(ACCOUNT_TIERS),
        region=rng.choice(REGIONS),
        csm_owner=rng.choice(CSM_OWNERS),
        purchased_seats=rng.choice((10, 25, 50, 100, 250)),
        declining=declining,
        outcome=outcome,
    )


def make_person(rng: random.Random, seed: int, index: int) -> Person:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    account = account_for(seed, index)
    if account is not None:
        domain = f"{account.company}.test"
    else:
        domain = rng.choice(MAIL_DOMAINS)
    email = f"{first}.{last}.{seed}.{index}@{domain}"
    typed = email if rng.random() < 0.7 else email.title()
    area = rng.choice(AREA_CODES)
    # 2xx-9xx exchanges and a subscriber number derived from the index: unique, never junk.
    exchange = 200 + (index // 10_000) % 800
    subscriber = (index * 7 + seed) % 10_000
    phone = f"+1{area}{exchange}{subscriber:04d}"
    dialled = phone if rng.random() < 0.6 else f"({area}) {exchange}-{subscriber:04d}"
    handle = f"{first}_{last}{index}"
    known = account is not None or rng.random() < 0.75
    region = account.region if account else rng.choice(REGIONS)
    traits: dict[str, str | int | float | bool | None] = {
        "name": f"{first.title()} {last.title()}",
        "age_group": rng.choice(AGE_GROUPS),
        "region": region,
        "lifecycle_stage": rng.choice(LIFECYCLE),
        "tier": account.tier if account else rng.choice(CONSUMER_TIERS),
    }
    if account is not None:
        traits["csm_owner"] = account.csm_owner
        traits["company"] = account.company
    return Person(
        index=index,
        name=f"{first.title()} {last.title()}",
        email=email,
        email_as_typed=typed,
        phone=phone,
        phone_as_dialled=dialled,
        social=f"twitter:@{handle}",
        messenger=f"whatsapp:{phone}",
        crm_id=f"crm-{seed}-{index:06d}" if known else None,
        device_id=f"dev-{seed}-{index:06d}",
        traits=traits,
        account=account,
    )
