"""Delivering one alert to one channel: signed webhook, Slack-compatible webhook, e-mail (SMTP).

Each call returns a ``DeliveryResult``; the notifier decides about retries. Apprise is not used:
its Slack plugin only builds ``hooks.slack.com`` URLs from tokens (no Slack-compatible servers such
as Mattermost or a local receiver) and it reports a bare bool, while the retry policy and the
delivery log need the HTTP status; the signed webhook needs exact headers anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import aiosmtplib
import httpx
import orjson

from services.alerts.config import AlertsSettings
from services.alerts.schemas import deliverable
from shared.egress import refused

SIGNATURE_HEADER = "X-Waypoint-Signature"
RETRYABLE_STATUS = {408, 425, 429}


@dataclass(frozen=True)
class Channel:
    id: uuid.UUID
    tenant_id: str
    name: str
    type: str  # webhook | slack | email
    url: str | None
    secret: str | None
    recipients: list[str]


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    retryable: bool = True
    status_code: int | None = None
    error: str | None = None
    duration_ms: float = 0.0


def url_is_secret(kind: str, url: str) -> bool:
    """A Slack URL is its own credential; so is any URL with user info or a query (tokens)."""
    parts = urlsplit(url)
    return kind == "slack" or bool(parts.username or parts.password or parts.query)


def url_hint(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}/…{url[-4:]}"


def public_channel(row: dict[str, Any]) -> dict[str, Any]:
    """A stored channel as ``ChannelPublic``: never a secret URL or the signing secret."""
    url, secret = row.get("url"), row.get("secret")
    return {
        **{k: v for k, v in row.items() if k != "secret"},
        "url": None if url is None or url_is_secret(row["type"], url) else url,
        "url_hint": url_hint(url) if url else None,
        "has_secret": bool(secret),
        "secret_hint": f"…{secret[-4:]}" if secret else None,
    }


def sign(body: bytes, secret: str) -> str:
    """``sha256=<hex HMAC-SHA256 of the exact body with the channel secret>`` (GitHub's scheme)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


RESOLVED = "waypoint.alert.resolved"


def idempotency_key(payload: dict[str, Any], channel: Channel) -> str:
    suffix = ":resolved" if payload.get("type") == RESOLVED else ""
    return f"{payload['alert_id']}:{channel.id}{suffix}"


def slack_body(payload: dict[str, Any]) -> dict[str, Any]:
    explanation = payload.get("explanation") or {}
    if payload.get("type") == RESOLVED:
        text = (
            f":white_check_mark: Churn alert for customer {payload['customer_id']} resolved "
            f"({payload.get('resolution')}); engagement now {payload.get('score')}"
        )
    else:
        text = (
            f":warning: Churn risk for customer {payload['customer_id']}"
            f" (owner {payload['owner']}): {explanation.get('summary', '')}"
        )
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"alert {payload['alert_id']} · {payload['rule']}"}
                ],
            },
        ],
    }


def email_message(payload: dict[str, Any], channel: Channel, sender: str) -> EmailMessage:
    explanation = payload.get("explanation") or {}
    message = EmailMessage()
    if payload.get("type") == RESOLVED:
        message["Subject"] = (
            f"[Waypoint] resolved ({payload.get('resolution')}): customer {payload['customer_id']}"
        )
    else:
        message["Subject"] = (
            f"[Waypoint] churn risk: customer {payload['customer_id']} at {payload['score']:.0f}"
        )
    message["From"] = sender
    message["To"] = ", ".join(channel.recipients)
    message["Message-ID"] = f"<{idempotency_key(payload, channel)}@waypoint>"
    lines = [
        explanation.get("summary", ""),
        "",
        f"Owner: {payload['owner']}",
        f"Rule(s): {', '.join(payload.get('rules') or [])}",
        "Factor contributions (points / max):",
        *(
            f"  {f}: {p:.1f} / {explanation.get('max_points', {}).get(f, 0):.1f}"
            for f, p in (explanation.get("contributions") or {}).items()
        ),
        "Recent journey events:",
        *(f"  {e.get('time')} {e.get('type')}" for e in explanation.get("recent_events", [])),
        "",
        f"Alert id: {payload['alert_id']}",
    ]
    if payload.get("type") == RESOLVED:
        lines = [
            f"The churn alert for customer {payload['customer_id']} was resolved "
            f"({payload.get('resolution')}); engagement is now {payload.get('score')}.",
            f"Owner: {payload['owner']}",
            f"Alert id: {payload['alert_id']}",
        ]
    message.set_content("\n".join(lines))
    return message


async def _post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
) -> DeliveryResult:
    """POST and keep only the status: the response body is never read, stored or logged (a
    receiver's answer is not ours to keep, and an endless one must not fill memory)."""
    start = time.perf_counter()
    try:
        async with client.stream("POST", url, content=body, headers=headers) as response:
            status = response.status_code
    except httpx.HTTPError as exc:
        reason = refused(exc)
        return DeliveryResult(
            ok=False,
            retryable=reason is None,  # a refused destination stays refused: no retries
            error=reason or f"{type(exc).__name__}: {exc}"[:500],
            duration_ms=(time.perf_counter() - start) * 1000,
        )
    elapsed = (time.perf_counter() - start) * 1000
    if 200 <= status < 300:
        return DeliveryResult(ok=True, status_code=status, duration_ms=elapsed)
    retryable = status >= 500 or status in RETRYABLE_STATUS
    return DeliveryResult(
        ok=False,
        retryable=retryable,
        status_code=status,
        error=f"HTTP {status}",
        duration_ms=elapsed,
    )


async def deliver(
    channel: Channel,
    payload: dict[str, Any],
    *,
    client: httpx.AsyncClient,
    settings: AlertsSettings,
) -> DeliveryResult:
    if channel.type in {"webhook", "slack"} and not channel.url:
        return DeliveryResult(ok=False, retryable=False, error="channel has no url")
    if channel.type == "webhook":
        body = orjson.dumps(payload)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key(payload, channel),
            "X-Waypoint-Event": str(payload.get("type", "waypoint.alert.opened")),
            "User-Agent": "waypoint-alerts/0.1",
        }
        if channel.secret:
            headers[SIGNATURE_HEADER] = sign(body, channel.secret)
        return await _post(client, channel.url or "", body, headers)
    if channel.type == "slack":
        body = orjson.dumps(slack_body(payload))
        return await _post(client, channel.url or "", body, {"Content-Type": "application/json"})
    if channel.type == "email":
        undeliverable = [r for r in channel.recipients if not deliverable(r)]
        if undeliverable:  # stored before the rule existed: refused now, never retried
            return DeliveryResult(
                ok=False, retryable=False, error=f"refused: recipients {undeliverable}"
            )
        start = time.perf_counter()
        try:
            await aiosmtplib.send(
                email_message(payload, channel, settings.smtp_from),
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=settings.smtp_password,
                start_tls=settings.smtp_starttls,
                timeout=settings.delivery_timeout_seconds,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            permanent = isinstance(exc, aiosmtplib.SMTPRecipientsRefused)
            return DeliveryResult(
                ok=False,
                retryable=not permanent,
                error=f"{type(exc).__name__}: {exc}"[:500],
                duration_ms=(time.perf_counter() - start) * 1000,
            )
        return DeliveryResult(ok=True, duration_ms=(time.perf_counter() - start) * 1000)
    return DeliveryResult(ok=False, retryable=False, error=f"unknown channel type {channel.type}")
