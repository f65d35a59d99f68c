"""Alerts: engagement scores, churn rules, alert lifecycle, outbox and notifications."""
