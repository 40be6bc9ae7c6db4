"""Webhooks end to end: a real local HTTP receiver checks each Standard Webhooks signature with the
spec's own library, fails the first attempt, and gets the retry from a real Celery worker."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from annotator.models import DeliveryStatus, Webhook, WebhookDelivery
from annotator.services.webhooks import signature, webhook_create, webhook_deliver
from tests.annotator.team.conftest import api
from tests.factories import make_prompt, make_trace

pytestmark = pytest.mark.slow


class Receiver:
    """A webhook endpoint: verifies every request, answers 500 to the first `fail_first` ones."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.secret = ""
        self.fail_first = fail_first
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Verifier(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                receiver.requests.append({"headers": headers, "body": json.loads(body), "verified": verified})
                failing = len(receiver.requests) <= receiver.fail_first or not verified
                self.send_response(500 if failing else 204)
                self.end_headers()
                if failing:
                    self.wfile.write(b"receiver is down")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/studio"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait_final(delivery_id: int, timeout: float = 45) -> WebhookDelivery:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        delivery = WebhookDelivery.objects.get(pk=delivery_id)
        if delivery.status != DeliveryStatus.PENDING:
            return delivery
        time.sleep(0.1)
    raise TimeoutError(f"delivery {delivery_id} still pending: {WebhookDelivery.objects.get(pk=delivery_id).__dict__}")


def test_signed_delivery_fails_once_then_the_retry_arrives(transactional_db, default_worker, project, users):
    receiver = Receiver(fail_first=1)
    try:
        owner = api(users["owner"])
        created = owner.post(f"/api/projects/{project.pk}/webhooks/",
                             {"url": receiver.url, "events": ["trace.reviewed"]}, format="json")
        assert created.status_code == 201, created.json()
        receiver.secret = created.json()["secret"]
        assert receiver.secret.startswith("whsec_")
        assert "secret" not in owner.get(f"/api/projects/{project.pk}/webhooks/").json()[0]
        trace = make_trace(project, make_prompt(project, actor=users["owner"]), steps=["1. 2 + 2 = 4"], answer="4")
        review = api(users["supervisor"]).put(f"/api/projects/{project.pk}/traces/{trace.pk}/reviews/",
                                              {"verdict": "accept", "safety_label": "safe_without_risk"},
                                              format="json")
        assert review.status_code == 200
        delivery = _wait_final(WebhookDelivery.objects.get().pk)
    finally:
        receiver.close()
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        "delivered", 2, 204, "")
    assert len(receiver.requests) == 2
    assert all(r["verified"] for r in receiver.requests)
    first, second = receiver.requests
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] == delivery.message_id
    assert int(second["headers"]["webhook-timestamp"]) >= int(first["headers"]["webhook-timestamp"])
    body = second["body"]
    assert body["type"] == "trace.reviewed"
    assert body["data"]["trace"] == trace.pk and body["data"]["review"]["verdict"] == "accept"
    assert body["data"]["review"]["annotator"]["username"] == "supervisor"
    log = api(users["owner"]).get(f"/api/projects/{project.pk}/webhooks/{delivery.webhook_id}/deliveries/").json()
    assert [(d["status"], d["attempts"]) for d in log["results"]] == [("delivered", 2)]


def test_a_receiver_that_keeps_failing_ends_failed_with_the_reason(transactional_db, default_worker, project,
                                                                     users):
    receiver = Receiver(fail_first=100)
    try:
        owner = api(users["owner"])
        hook = owner.post(f"/api/projects/{project.pk}/webhooks/", {"url": receiver.url}, format="json").json()
        receiver.secret = hook["secret"]
        test = owner.post(f"/api/projects/{project.pk}/webhooks/{hook['id']}/test/")
        assert test.status_code == 202 and test.json()["event_type"] == "webhook.test"
        delivery = _wait_final(test.json()["id"])
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 3, 500)
        assert delivery.last_error == "HTTP 500: receiver is down"
        assert len(receiver.requests) == 3 and all(r["verified"] for r in receiver.requests)
        # An owner sends it again once the receiver is back: same message id, fresh attempts.
        receiver.fail_first = 0
        again = owner.post(f"/api/projects/{project.pk}/webhooks/{hook['id']}/deliveries/{delivery.pk}/retry/")
        assert again.status_code == 202
        delivered = _wait_final(delivery.pk)
    finally:
        receiver.close()
    assert (delivered.status, delivered.attempts) == ("delivered", 1)
    assert receiver.requests[-1]["headers"]["webhook-id"] == delivery.message_id


def test_targets_must_pass_the_outbound_policy(project, users, settings):
    settings.WEBHOOK_URL_ALLOWLIST = ["https://hooks.example.org/studio"]
    owner = api(users["owner"])
    for url in ("http://127.0.0.1:9/x", "http://169.254.169.254/latest", "https://hooks.example.org/other",
                "https://user:pw@hooks.example.org/studio", "file:///etc/passwd"):
        response = owner.post(f"/api/projects/{project.pk}/webhooks/", {"url": url}, format="json")
        assert response.status_code == 400 and response.json()["code"] == "not_allowed", url
    assert not Webhook.objects.exists()
    ok = owner.post(f"/api/projects/{project.pk}/webhooks/", {"url": "https://hooks.example.org/studio/in"},
                    format="json")
    assert ok.status_code == 201
    bad_events = owner.post(f"/api/projects/{project.pk}/webhooks/",
                            {"url": "https://hooks.example.org/studio", "events": ["trace.deleted"]}, format="json")
    assert bad_events.status_code == 400 and "trace.deleted" in bad_events.json()["detail"]


def test_a_target_no_longer_allowed_fails_at_delivery_without_a_request(project, users, settings):
    hook = webhook_create(project=project, actor=users["owner"], url="http://127.0.0.1:9/hook")
    delivery = WebhookDelivery.objects.create(webhook=hook, message_id="msg_x", event_type="webhook.test",
                                              payload={"type": "webhook.test"})
    settings.WEBHOOK_URL_ALLOWLIST = []
    assert webhook_deliver(delivery_id=delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and delivery.last_error.startswith("Refused by the outbound policy")
    assert webhook_deliver(delivery_id=delivery.pk) == "failed"  # a redelivered task does nothing more
    delivery.refresh_from_db()
    assert delivery.attempts == 1


def test_signature_is_the_specs_and_another_secret_fails_it():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the example secret of the spec's documentation
    body = b'{"type":"webhook.test"}'
    header = signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
               "webhook-signature": header}
    when = datetime.fromtimestamp(1614265330, tz=UTC)
    expected = Verifier(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", when, body.decode())
    assert header == expected
    with pytest.raises(WebhookVerificationError):
        Verifier("whsec_" + "A" * 32).verify(body, {**headers, "webhook-timestamp": str(int(time.time()))})


def test_a_run_that_ends_is_announced_once(project, users, settings):
    from annotator.models import ModelVersion, TrainingRun
    from annotator.services.training.notify import run_ended

    hook = webhook_create(project=project, actor=users["owner"], url="http://127.0.0.1:9/hook", events=["run.finished"])
    base = ModelVersion.objects.create(project=project, name="base", base_model="/models/demo")
    run = TrainingRun.objects.create(project=project, stage="sft", base_model=base, status="running",
                                     created_by=users["owner"])
    assert run_ended(run_id=run.pk) is False  # still running: nothing to say
    TrainingRun.objects.filter(pk=run.pk).update(status="failed", error="CUDA out of memory")
    assert run_ended(run_id=run.pk) is True
    assert run_ended(run_id=run.pk) is False  # a redelivered task says nothing twice
    (delivery,) = WebhookDelivery.objects.filter(webhook=hook)
    assert delivery.event_type == "run.finished"
    assert delivery.payload["data"] | {} == {**delivery.payload["data"], "run": run.pk, "status": "failed",
                                             "error": "CUDA out of memory", "started_by": "owner"}
