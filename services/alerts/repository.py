"""Queries behind the alerts API (every one filters on the caller's tenant; never commits)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts.channels import public_channel
from services.alerts.engagement import mark_changed
from services.alerts.model import EngagementModel
from services.alerts.schemas import ChannelIn
from shared.db import raw_connection
from shared.errors import Conflict, NotFound

_ALERT_COLUMNS = (
    "id, customer_id, account_id, rule, rules, status, owner, segment, score, threshold, "
    "explanation, notes, opened_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by, "
    "resolution"
)


def _json(value: Any) -> Any:
    """jsonb arrives as text through ``text()`` queries on asyncpg."""
    return orjson.loads(value) if isinstance(value, str) else value


def _decoded(row: Any, *columns: str) -> dict[str, Any]:
    values = dict(row._mapping)
    for column in columns:
        values[column] = _json(values[column])
    return values


def _alert(row: Any) -> dict[str, Any]:
    return _decoded(row, "rules", "explanation", "notes")


async def list_alerts(
    session: AsyncSession,
    tenant_id: str,
    *,
    status: str | None,
    owner: str | None,
    rule: str | None,
    customer_id: str | None,
    account_id: str | None = None,
    cursor: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[dict[str, Any]]:
    clauses = ["tenant_id = :t"]
    params: dict[str, Any] = {"t": tenant_id, "limit": limit}
    filters = (
        ("status", status),
        ("owner", owner),
        ("customer_id", customer_id),
        ("account_id", account_id),
    )
    for name, value in filters:
        if value is not None:
            clauses.append(f"{name} = :{name}")
            params[name] = value
    if rule is not None:
        clauses.append("rules @> jsonb_build_array(CAST(:rule AS text))")
        params["rule"] = rule
    if cursor is not None:
        clauses.append("(opened_at, id) < (:c_at, :c_id)")
        params["c_at"], params["c_id"] = cursor
    rows = await session.execute(
        text(
            f"SELECT {_ALERT_COLUMNS} FROM alerts.alert WHERE {' AND '.join(clauses)} "
            "ORDER BY opened_at DESC, id DESC LIMIT :limit"
        ),
        params,
    )
    return [_alert(r) for r in rows]


async def get_alert(
    session: AsyncSession, tenant_id: str, alert_id: uuid.UUID, *, lock: bool = False
) -> dict[str, Any]:
    row = (
        await session.execute(
            text(
                f"SELECT {_ALERT_COLUMNS} FROM alerts.alert WHERE tenant_id = :t AND id = :id"
                + (" FOR UPDATE" if lock else "")
            ),
            {"t": tenant_id, "id": alert_id},
        )
    ).first()
    if row is None:
        raise NotFound(f"no alert {alert_id}")
    return _alert(row)


async def transition(
    session: AsyncSession,
    tenant_id: str,
    alert_id: uuid.UUID,
    *,
    to: str,
    actor: str,
    note: str | None,
) -> dict[str, Any]:
    """open → acknowledged → resolved (a resolved alert stays resolved)."""
    alert = await get_alert(session, tenant_id, alert_id, lock=True)
    if alert["status"] == "resolved":
        raise Conflict(f"alert {alert_id} is already resolved")
    if to == alert["status"]:
        raise Conflict(f"alert {alert_id} is already {to}")
    now = datetime.now(UTC)
    notes = list(alert["notes"])
    if note:
        notes.append({"at": now.isoformat(), "by": actor, "text": note})
    if to == "acknowledged":
        sql = "status = 'acknowledged', acknowledged_at = :now, acknowledged_by = :actor"
    else:
        sql = "status = 'resolved', resolved_at = :now, resolved_by = :actor, resolution = 'manual'"
    await session.execute(
        text(
            f"UPDATE alerts.alert SET {sql}, notes = CAST(:notes AS jsonb) "
            "WHERE tenant_id = :t AND id = :id"
        ),
        {"now": now, "actor": actor, "notes": orjson.dumps(notes).decode(), "t": tenant_id,
         "id": alert_id},
    )  # fmt: skip
    # the agent's context shows the customer's open alert: journey hears of this change
    await mark_changed(await raw_connection(session), [(tenant_id, alert["customer_id"])])
    return await get_alert(session, tenant_id, alert_id)


async def customer_engagement(
    session: AsyncSession, tenant_id: str, customer_id: str, *, limit: int
) -> dict[str, Any]:
    state = (
        await session.execute(
            text(
                "SELECT s.customer_id, s.account_id, s.segment, s.score, s.scored_at, "
                "s.contributions, a.id AS open_alert_id, s.recent_events "
                "FROM alerts.customer_state s LEFT JOIN alerts.alert a ON a.id = s.open_alert_id "
                "AND a.tenant_id = s.tenant_id AND a.status <> 'resolved' "
                "WHERE s.tenant_id = :t AND s.customer_id = :c"
            ),
            {"t": tenant_id, "c": customer_id},
        )
    ).first()
    if state is None:
        raise NotFound(f"no engagement score for customer {customer_id}")
    history = await session.execute(
        text(
            "SELECT scored_at, score, previous_score, delta, segment, cause, contributions, "
            "event_ids FROM alerts.score_history WHERE tenant_id = :t AND customer_id = :c "
            "ORDER BY scored_at DESC, id DESC LIMIT :limit"
        ),
        {"t": tenant_id, "c": customer_id, "limit": limit},
    )
    return {
        **_decoded(state, "contributions", "recent_events"),
        "history": [_decoded(r, "contributions", "event_ids") for r in history],
    }


ACCOUNT_CUSTOMERS_LISTED = 1000


async def account_engagement(
    session: AsyncSession, tenant_id: str, account_id: str
) -> dict[str, Any]:
    """Mean and minimum over all the account's customers (in SQL, however many there are);
    the list shows the lowest-scoring ones, at most ``ACCOUNT_CUSTOMERS_LISTED``."""
    params = {"t": tenant_id, "a": account_id}
    where = "WHERE tenant_id = :t AND account_id = :a AND merged_into IS NULL"
    totals = (
        await session.execute(
            text(
                "SELECT count(*) AS customers, count(score) AS scored, avg(score) AS score, "
                f"min(score) AS min_score FROM alerts.customer_state {where}"
            ),
            params,
        )
    ).one()
    if not totals.customers:
        raise NotFound(f"no engagement scores for account {account_id}")
    rows = await session.execute(
        text(
            f"SELECT customer_id, score, segment FROM alerts.customer_state {where} "
            "ORDER BY score NULLS LAST, customer_id LIMIT :listed"
        ),
        {**params, "listed": ACCOUNT_CUSTOMERS_LISTED},
    )
    open_alerts = (
        await session.execute(
            text(
                "SELECT count(*) FROM alerts.alert "
                "WHERE tenant_id = :t AND account_id = :a AND status <> 'resolved'"
            ),
            params,
        )
    ).scalar_one()
    return {
        "account_id": account_id,
        "score": round(totals.score, 2) if totals.score is not None else None,
        "min_score": totals.min_score,
        "customer_count": totals.customers,
        "scored_customers": totals.scored,
        "customers": [
            {"customer_id": r.customer_id, "score": r.score, "segment": r.segment} for r in rows
        ],
        "open_alerts": open_alerts,
    }


async def get_model(session: AsyncSession, tenant_id: str) -> tuple[EngagementModel, int, Any]:
    row = (
        await session.execute(
            text(
                "SELECT model, version, updated_at FROM alerts.engagement_model "
                "WHERE tenant_id = :t"
            ),
            {"t": tenant_id},
        )
    ).first()
    if row is None:
        return EngagementModel(), 0, None
    return EngagementModel.model_validate(_json(row.model)), row.version, row.updated_at


async def put_model(
    session: AsyncSession, tenant_id: str, model: EngagementModel, *, actor: str
) -> int:
    """Store the model and mark the tenant's customers due for rescoring (the scheduler picks
    them up on its next pass; events rescore at once)."""
    version = (
        await session.execute(
            text(
                "INSERT INTO alerts.engagement_model (tenant_id, model, updated_by) "
                "VALUES (:t, CAST(:m AS jsonb), :by) ON CONFLICT (tenant_id) DO UPDATE SET "
                "model = EXCLUDED.model, updated_by = EXCLUDED.updated_by, updated_at = now(), "
                "version = alerts.engagement_model.version + 1 RETURNING version"
            ),
            {"t": tenant_id, "m": model.model_dump_json(), "by": actor},
        )
    ).scalar_one()
    await session.execute(
        text(
            "UPDATE alerts.customer_state SET scored_at = 'epoch' "
            "WHERE tenant_id = :t AND merged_into IS NULL"
        ),
        {"t": tenant_id},
    )
    return int(version)


async def list_channels(session: AsyncSession, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's channels as ``ChannelPublic``: secrets only as hints."""
    rows = await session.execute(
        text(
            "SELECT id, name, type, url, secret, recipients, enabled, created_at "
            "FROM alerts.notification_channel "
            "WHERE tenant_id = :t AND deleted_at IS NULL ORDER BY name"
        ),
        {"t": tenant_id},
    )
    return [public_channel(_decoded(r, "recipients")) for r in rows]


async def replace_channels(
    session: AsyncSession, tenant_id: str, channels: list[ChannelIn]
) -> list[str]:
    """Make the tenant's channels exactly ``channels``; returns what is wrong, if anything."""
    existing = {
        r.name: r
        for r in await session.execute(
            text(
                "SELECT id, name, type, url, secret FROM alerts.notification_channel "
                "WHERE tenant_id = :t AND deleted_at IS NULL FOR UPDATE"
            ),
            {"t": tenant_id},
        )
    }
    problems = []
    for c in channels:
        old = existing.get(c.name)
        if c.type.value == "webhook" and c.secret is None and (old is None or not old.secret):
            problems.append(f"channel {c.name!r}: a webhook needs a secret (16+ characters)")
        if c.type.value != "email" and c.url is None and _stored_url(old, c) is None:
            problems.append(f"channel {c.name!r}: a {c.type.value} channel needs a url")
    if problems:
        return problems
    wanted = {c.name for c in channels}
    await session.execute(
        text(
            "UPDATE alerts.notification_channel SET deleted_at = now() "
            "WHERE tenant_id = :t AND deleted_at IS NULL AND NOT (name = ANY(:keep))"
        ),
        {"t": tenant_id, "keep": list(wanted)},
    )
    for c in channels:
        old = existing.get(c.name)
        values = {
            "t": tenant_id,
            "name": c.name,
            "type": c.type.value,
            "url": str(c.url) if c.url else _stored_url(old, c),
            "secret": c.secret if c.secret is not None else (old.secret if old else None),
            "recipients": orjson.dumps(c.recipients).decode(),
            "enabled": c.enabled,
        }
        if old is not None and old.type == c.type.value:
            await session.execute(
                text(
                    "UPDATE alerts.notification_channel SET url = :url, secret = :secret, "
                    "recipients = CAST(:recipients AS jsonb), enabled = :enabled "
                    "WHERE id = :id AND tenant_id = :t"
                ),
                {**values, "id": old.id},
            )
            continue
        if old is not None:
            await session.execute(
                text("UPDATE alerts.notification_channel SET deleted_at = now() WHERE id = :id"),
                {"id": old.id},
            )
        await session.execute(
            text(
                "INSERT INTO alerts.notification_channel "
                "(id, tenant_id, name, type, url, secret, recipients, enabled) VALUES "
                "(:id, :t, :name, :type, :url, :secret, CAST(:recipients AS jsonb), :enabled)"
            ),
            {**values, "id": uuid.uuid4()},
        )
    return []


def _stored_url(old: Any, channel: ChannelIn) -> str | None:
    """The URL kept when a channel is sent back without one (GET hides secret URLs)."""
    if old is None or old.type != channel.type.value:
        return None
    url: str | None = old.url
    return url


async def churn_reasons(
    session: AsyncSession, tenant_id: str, *, since: datetime | None
) -> list[dict[str, Any]]:
    rows = await session.execute(
        text(
            "SELECT segment, outcome, reason, count(DISTINCT customer_id) AS customers, "
            "count(DISTINCT customer_id) FILTER (WHERE first_alert_at IS NOT NULL) AS alerted, "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY lead_time_s) / 86400.0 "
            "AS median_lead_time_days "
            "FROM alerts.churn_outcome WHERE tenant_id = :t "
            "AND (CAST(:since AS timestamptz) IS NULL OR occurred_at >= :since) "
            "GROUP BY segment, outcome, reason ORDER BY segment, outcome, customers DESC"
        ),
        {"t": tenant_id, "since": since},
    )
    return [dict(r._mapping) for r in rows]


async def add_note(
    session: AsyncSession, tenant_id: str, alert_id: uuid.UUID, *, actor: str, note: str
) -> dict[str, Any]:
    """Append a note to an alert without changing its status (the inbox's "add a note")."""
    await get_alert(session, tenant_id, alert_id, lock=True)
    entry = {"at": datetime.now(UTC).isoformat(), "by": actor, "text": note}
    await session.execute(
        text(
            "UPDATE alerts.alert SET notes = notes || CAST(:entry AS jsonb) "
            "WHERE tenant_id = :t AND id = :id"
        ),
        {"entry": orjson.dumps([entry]).decode(), "t": tenant_id, "id": alert_id},
    )
    return await get_alert(session, tenant_id, alert_id)
