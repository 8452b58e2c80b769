"""Incident notifications to people (Slack-compatible webhooks)."""
