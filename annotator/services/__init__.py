"""Writes. Each service is keyword-only, runs in one transaction, and records an audit event in it.
REST views, websocket consumers and Celery tasks all call these same functions."""
