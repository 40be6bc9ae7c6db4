"""Project webhooks, after the Standard Webhooks spec (standardwebhooks.com).

Every message is a JSON body ``{"type", "timestamp", "data"}`` POSTed with three headers:
``webhook-id`` (the message id, the same on every retry, so receivers can drop duplicates),
``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">``, keyed with the base64-decoded part of
the webhook's ``whsec_`` secret).

``webhook_emit`` is called by the service whose change is the event, in its transaction: it writes
one delivery row per subscribed webhook and enqueues it on commit. ``webhook_deliver`` (the Celery
task ``annotator.deliver_webhook``) makes one attempt: a 2xx ends the delivery ``delivered``;
anything else is recorded (status code or error) and retried after a growing wait
(``WEBHOOK_BACKOFF_S``) until ``WEBHOOK_MAX_ATTEMPTS``, when it ends ``failed`` with the last
reason. A target the outbound policy no longer allows fails at once. The attempt holds the row
lock, so a redelivered task never sends one attempt twice; ``webhooks_recover`` (at worker start)
re-enqueues deliveries whose retry message was lost.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotator.enqueue import DELIVER_WEBHOOK, enqueue, enqueue_on_commit
from annotator.errors import Conflict, InvalidInput
from annotator.models import DeliveryStatus, Project, Webhook, WebhookDelivery
from annotator.outbound import webhook_url_check
from annotator.services.audit import audit_record

log = logging.getLogger(__name__)

EVENT_TYPES = ("trace.reviewed", "correction.created", "snapshot.ready", "run.finished", "model.promoted")
TEST_EVENT = "webhook.test"
SECRET_PREFIX = "whsec_"
MAX_ERROR = 500


def secret_new() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _check_events(events: Any) -> list[str]:
    if events is None:
        return list(EVENT_TYPES)
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise InvalidInput("events must be a list of event types.")
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(f"Unknown event type(s): {', '.join(unknown)}. Known: {', '.join(EVENT_TYPES)}.")
    if not events:
        raise InvalidInput("Subscribe to at least one event type.")
    return list(dict.fromkeys(events))


@transaction.atomic
def webhook_create(*, project: Project, actor: Any, url: Any, events: Any = None, description: Any = "") -> Webhook:
    webhook = Webhook.objects.create(
        project=project,
        url=webhook_url_check(url),
        events=_check_events(events),
        description=str(description or "")[:200],
        secret=secret_new(),
        created_by=actor,
    )
    audit_record(project=project, actor=actor, action="webhook.created", target=webhook,
                 data={"url": webhook.url, "events": webhook.events})
    return webhook


@transaction.atomic
def webhook_update(*, webhook: Webhook, actor: Any, rotate_secret: bool = False, **fields: Any) -> Webhook:
    unknown = set(fields) - {"url", "events", "active", "description"}
    if unknown:
        raise InvalidInput(f"Unknown webhook fields: {', '.join(sorted(unknown))}.")
    if "url" in fields:
        fields["url"] = webhook_url_check(fields["url"])
    if "events" in fields:
        fields["events"] = _check_events(fields["events"])
    if "active" in fields and not isinstance(fields["active"], bool):
        raise InvalidInput("active must be true or false.")
    for key, value in fields.items():
        setattr(webhook, key, value)
    if rotate_secret:
        webhook.secret = secret_new()
        fields["secret"] = "rotated"
    webhook.save(update_fields=[f for f in ["url", "events", "active", "description", "secret"]
                                if f in fields])
    audit_record(project=webhook.project, actor=actor, action="webhook.updated", target=webhook,
                 data={k: v for k, v in fields.items()})
    return webhook


@transaction.atomic
def webhook_delete(*, webhook: Webhook, actor: Any) -> None:
    audit_record(project=webhook.project, actor=actor, action="webhook.deleted", target=webhook,
                 data={"url": webhook.url})
    webhook.delete()


def _delivery(webhook: Webhook, event_type: str, data: dict[str, Any]) -> WebhookDelivery:
    now = timezone.now()
    delivery = WebhookDelivery.objects.create(
        webhook=webhook,
        message_id=f"msg_{uuid.uuid4().hex}",
        event_type=event_type,
        payload={"type": event_type, "timestamp": now.isoformat(), "data": data},
        next_attempt_at=now,
    )
    enqueue_on_commit(DELIVER_WEBHOOK, delivery_id=delivery.pk)
    return delivery


def webhook_emit(*, project: Project, event_type: str, data: dict[str, Any]) -> int:
    """Queue ``event_type`` for every active webhook of the project that takes it. Call it inside
    the transaction of the change: a rollback sends nothing. Returns the number of deliveries."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event_type!r}")
    hooks = [w for w in Webhook.objects.filter(project_id=project.pk, active=True) if event_type in w.events]
    for webhook in hooks:
        _delivery(webhook, event_type, {"project": project.pk, **data})
    return len(hooks)


@transaction.atomic
def webhook_test(*, webhook: Webhook, actor: Any) -> WebhookDelivery:
    """A ``webhook.test`` message to this webhook, whatever it subscribes to and even if paused."""
    audit_record(project=webhook.project, actor=actor, action="webhook.tested", target=webhook)
    return _delivery(webhook, TEST_EVENT, {"project": webhook.project_id, "webhook": webhook.pk,
                                           "by": getattr(actor, "username", "")})


@transaction.atomic
def delivery_retry(*, delivery: WebhookDelivery, actor: Any) -> WebhookDelivery:
    """Send a failed delivery again, as a fresh series of attempts with the same message id."""
    locked = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
    if locked.status != DeliveryStatus.FAILED:
        raise Conflict(f"Only a failed delivery can be retried; this one is {locked.status}.", code="bad_state")
    locked.status, locked.attempts, locked.finished_at = DeliveryStatus.PENDING, 0, None
    locked.next_attempt_at = timezone.now()
    locked.save(update_fields=["status", "attempts", "finished_at", "next_attempt_at"])
    audit_record(project=locked.webhook.project, actor=actor, action="webhook_delivery.retried", target=locked)
    enqueue_on_commit(DELIVER_WEBHOOK, delivery_id=locked.pk)
    return locked


def _post(webhook: Webhook, delivery: WebhookDelivery) -> tuple[int | None, str]:
    """One attempt: (HTTP status or None, error text; empty when delivered)."""
    import httpx

    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    ts = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "SafeLadder-Studio-Webhooks/1",
        "webhook-id": delivery.message_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature(webhook.secret, delivery.message_id, ts, body),
    }
    try:
        # No redirects: a redirect could lead past the outbound policy checked above.
        response = httpx.post(webhook.url, content=body, headers=headers, timeout=settings.WEBHOOK_TIMEOUT_S,
                              follow_redirects=False)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
    if 200 <= response.status_code < 300:
        return response.status_code, ""
    return response.status_code, f"HTTP {response.status_code}: {response.text[:200]}"[:MAX_ERROR]


def webhook_deliver(*, delivery_id: int) -> str | None:
    """Make the next attempt of a pending delivery (the worker's side). Returns its status."""
    retry_in: float | None = None
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True).select_related("webhook")
            .filter(pk=delivery_id).first()
        )
        if delivery is None:
            return None  # gone, or another worker holds this attempt
        if delivery.status != DeliveryStatus.PENDING:
            return delivery.status
        webhook = delivery.webhook
        delivery.attempts += 1
        try:
            webhook_url_check(webhook.url)
        except InvalidInput as exc:
            code, error, final = None, f"Refused by the outbound policy: {exc.message}", True
        else:
            code, error = _post(webhook, delivery)
            final = not error or delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS
        now = timezone.now()
        delivery.last_status_code, delivery.last_error = code, error
        if not error:
            delivery.status, delivery.finished_at, delivery.next_attempt_at = DeliveryStatus.DELIVERED, now, None
        elif final:
            delivery.status, delivery.finished_at, delivery.next_attempt_at = DeliveryStatus.FAILED, now, None
        else:
            waits = settings.WEBHOOK_BACKOFF_S or [60.0]
            retry_in = waits[min(delivery.attempts - 1, len(waits) - 1)]
            delivery.next_attempt_at = now + timedelta(seconds=retry_in)
        delivery.save(update_fields=["attempts", "last_status_code", "last_error", "status", "finished_at",
                                     "next_attempt_at"])
        if retry_in is not None:
            enqueue_on_commit(DELIVER_WEBHOOK, delivery_id=delivery.pk, countdown=retry_in)
    if error:
        log.info("webhook delivery %s attempt %s: %s", delivery_id, delivery.attempts, error)
    return delivery.status


def webhooks_recover(*, grace_s: float = 120.0) -> list[int]:
    """Re-enqueue pending deliveries whose attempt is overdue by more than ``grace_s`` (their message
    was lost with a broker or a worker). Safe to repeat: an attempt holds its row lock."""
    overdue = timezone.now() - timedelta(seconds=grace_s)
    ids = list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lt=overdue)
        .values_list("pk", flat=True)[:1000]
    )
    for pk in ids:
        enqueue(DELIVER_WEBHOOK, delivery_id=pk)
    return ids
