"""SQS adapter: the job queue, one standard queue per lane.

Each lane ``<lane>`` is an SQS queue whose redrive policy moves a message to
the queue of the lane ``<lane>-dlq`` once it has been received
``max_receives`` times without being deleted: exactly the dead-letter
behaviour the SQLite queue implements by hand, here done by SQS itself.
``create_lane`` creates such a pair (tests, scripts); production queues come
from the CDK stack with the same settings.

Why the choices below:

* The visibility timeout is given on every ``ReceiveMessage``, not taken from
  the queue, because the caller knows how long its job may take. SQS counts it
  in whole seconds, so a fraction is rounded *up* (never shorter than asked).
* ``ack`` deletes by receipt handle. A receipt SQS no longer accepts (the
  message was already deleted, or its handle is stale) is a no-op, like
  acking an unknown receipt in the SQLite queue: at-least-once delivery means
  the job may already have been redone elsewhere.
* Bodies travel as ASCII JSON: SQS refuses some characters (control
  characters, lone surrogates) in a message body, and escapes carry them all.
* ``extend`` is ``ChangeMessageVisibility``; a receipt SQS no longer accepts, a
  message no longer in flight under it, or one 12 hours in flight (SQS's limit)
  answers False, as the SQLite queue does for a message it no longer holds.
* ``depth`` is ``ApproximateNumberOfMessages``: the visible backlog, the number
  autoscaling wants. In-flight messages are not counted.
* The adapter checks once per lane that the queue's redrive policy really
  dead-letters after ``max_receives`` into ``<queue name>-dlq``, because that
  promise of the port lives in infrastructure, not in this code; a drifted
  queue is a configuration error reported on first use rather than jobs that
  retry forever or vanish.
* ``receive`` short-polls by default (``wait_time_s=0``) so that an empty lane
  answers at once, as the port says; a long-running consumer may pass up to
  20 s to cut empty receives (and cost) on idle lanes.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping

from botocore.exceptions import BotoCoreError, ClientError

from infaas.adapters.aws._sdk import default_client, error_code, sdk_errors, translate
from infaas.core.errors import InfaasError, InvalidInput, Unavailable

DLQ_SUFFIX = "-dlq"
SEND_BATCH = 10  # messages per SendMessageBatch (an SQS limit)
MAX_VISIBILITY_S = 43_200  # SQS limit: 12 hours
DLQ_RETENTION_S = 14 * 24 * 3600  # the maximum; longer than the lane's, so nothing expires in transit

# Error codes SQS answers DeleteMessage with when the receipt no longer counts.
_STALE_RECEIPT_CODES = frozenset({"ReceiptHandleIsInvalid", "AWS.SimpleQueueService.ReceiptHandleIsInvalid"})
# ... and ChangeMessageVisibility, when the message is no longer in flight under that receipt.
_NOT_IN_FLIGHT_CODES = frozenset({"MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight"})

QueueUrls = Mapping[str, str] | Callable[[str], str]


class SqsJobQueue:
    """``JobQueue`` on SQS. ``queue_urls`` maps each lane (dead-letter lanes
    included) to its queue URL, as a dict or a function; see
    ``queue_urls_by_name`` for one that asks SQS."""

    def __init__(
        self,
        queue_urls: QueueUrls,
        client: Any = None,
        max_receives: int | None = 3,
        *,
        wait_time_s: int = 0,
    ) -> None:
        if not 0 <= wait_time_s <= 20:
            raise InvalidInput("wait_time_s must be between 0 and 20 (an SQS limit)", field="wait_time_s")
        self.client = client if client is not None else default_client("sqs")
        self.max_receives = max_receives
        self.wait_time_s = int(wait_time_s)
        self._resolve = queue_urls if callable(queue_urls) else _from_mapping(dict(queue_urls))
        self._urls: dict[str, str] = {}

    def send(self, lane: str, body: Mapping[str, Any]) -> str:
        text = json.dumps(dict(body), separators=(",", ":"), allow_nan=False)
        with sdk_errors(f"sending a job to lane {lane}"):
            response = self.client.send_message(QueueUrl=self._url(lane), MessageBody=text)
        return str(response["MessageId"])

    def send_many(self, lane: str, bodies: list[Mapping[str, Any]]) -> int:
        """Send ``bodies`` 10 to a ``SendMessageBatch`` (an SQS limit); entries SQS fails (throttling,
        an internal error) are sent again once, then raise, so the caller retries the whole step."""
        url = self._url(lane)
        for start in range(0, len(bodies), SEND_BATCH):
            entries = [{"Id": str(i), "MessageBody": json.dumps(dict(b), separators=(",", ":"), allow_nan=False)}
                       for i, b in enumerate(bodies[start:start + SEND_BATCH])]
            for attempt in range(2):
                with sdk_errors(f"sending {len(entries)} jobs to lane {lane}"):
                    response = self.client.send_message_batch(QueueUrl=url, Entries=entries)
                failed = {f["Id"] for f in response.get("Failed") or []}
                entries = [e for e in entries if e["Id"] in failed]
                if not entries:
                    break
            else:
                raise Unavailable(f"SQS did not take {len(entries)} jobs of lane {lane}")
        return len(bodies)

    def receive(self, lane: str, *, visibility_s: float = 60.0) -> tuple[str, dict[str, Any]] | None:
        with sdk_errors(f"receiving a job from lane {lane}"):
            response = self.client.receive_message(
                QueueUrl=self._url(lane),
                MaxNumberOfMessages=1,
                VisibilityTimeout=_visibility(visibility_s),
                WaitTimeSeconds=self.wait_time_s,
            )
        messages = response.get("Messages") or []
        if not messages:
            return None
        message = messages[0]
        try:
            body = json.loads(message["Body"])
        except ValueError as exc:
            # Not ours to fix: unacked, it is redelivered and dead-letters after max_receives.
            raise InfaasError(f"job in lane {lane} is not JSON: {exc}", lane=lane) from exc
        return str(message["ReceiptHandle"]), body

    def ack(self, lane: str, receipt: str) -> None:
        try:
            self.client.delete_message(QueueUrl=self._url(lane), ReceiptHandle=receipt)
        except ClientError as exc:
            if error_code(exc) in _STALE_RECEIPT_CODES:
                return
            raise translate(exc, f"acking a job in lane {lane}") from exc
        except BotoCoreError as exc:
            raise translate(exc, f"acking a job in lane {lane}") from exc

    def extend(self, lane: str, receipt: str, visibility_s: float) -> bool:
        try:
            self.client.change_message_visibility(QueueUrl=self._url(lane), ReceiptHandle=receipt,
                                                  VisibilityTimeout=_visibility(visibility_s))
        except ClientError as exc:
            if error_code(exc) in _STALE_RECEIPT_CODES | _NOT_IN_FLIGHT_CODES:
                return False
            if error_code(exc) == "InvalidParameterValue" and "Total VisibilityTimeout" in str(exc):
                return False  # 12 hours in flight, the most SQS allows: it cannot be held longer
            raise translate(exc, f"extending a job's visibility in lane {lane}") from exc
        except BotoCoreError as exc:
            raise translate(exc, f"extending a job's visibility in lane {lane}") from exc
        return True

    def depth(self, lane: str) -> int:
        with sdk_errors(f"reading the depth of lane {lane}"):
            response = self.client.get_queue_attributes(
                QueueUrl=self._url(lane), AttributeNames=["ApproximateNumberOfMessages"]
            )
        return int(response["Attributes"]["ApproximateNumberOfMessages"])

    # -- helpers ----------------------------------------------------------------
    def _url(self, lane: str) -> str:
        url = self._urls.get(lane)
        if url is None:
            url = self._resolve(lane)
            if self.max_receives is not None and not lane.endswith(DLQ_SUFFIX):
                self._check_redrive(lane, url)
            self._urls[lane] = url
        return url

    def _check_redrive(self, lane: str, url: str) -> None:
        with sdk_errors(f"reading the redrive policy of lane {lane}"):
            attributes = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
        policy = json.loads(attributes.get("Attributes", {}).get("RedrivePolicy") or "{}")
        name = url.rstrip("/").rsplit("/", 1)[-1]
        target = str(policy.get("deadLetterTargetArn", "")).rsplit(":", 1)[-1]
        receives = policy.get("maxReceiveCount")
        if receives is None or int(receives) != self.max_receives or target != name + DLQ_SUFFIX:
            raise InfaasError(
                f"queue {name} of lane {lane} must dead-letter into {name}{DLQ_SUFFIX} after "
                f"{self.max_receives} receives; its redrive policy is {policy or 'missing'}",
                lane=lane,
            )


def _visibility(visibility_s: float) -> int:
    seconds = math.ceil(visibility_s)
    if not 0 <= seconds <= MAX_VISIBILITY_S:
        raise InvalidInput(
            f"visibility_s must be between 0 and {MAX_VISIBILITY_S} s (an SQS limit), got {visibility_s}",
            field="visibility_s",
        )
    return seconds


def _from_mapping(urls: dict[str, str]) -> Callable[[str], str]:
    def resolve(lane: str) -> str:
        try:
            return urls[lane]
        except KeyError:
            raise InfaasError(f"no SQS queue is configured for lane {lane!r}", lane=lane) from None

    return resolve


def queue_urls_by_name(client: Any, prefix: str = "") -> Callable[[str], str]:
    """A resolver that looks up the queue named ``<prefix><lane>`` (one
    ``GetQueueUrl`` per lane; ``SqsJobQueue`` remembers the answer)."""

    def resolve(lane: str) -> str:
        with sdk_errors(f"looking up the queue of lane {lane}"):
            return str(client.get_queue_url(QueueName=prefix + lane)["QueueUrl"])

    return resolve


def create_lane(client: Any, lane: str, max_receives: int = 3) -> dict[str, str]:
    """Create the queue of ``lane`` and its dead-letter queue ``<lane>-dlq``
    with a redrive policy after ``max_receives`` receives, both encrypted with
    SQS-managed keys. Idempotent for identical settings. Returns
    ``{lane: url, '<lane>-dlq': url}``, ready to pass to ``SqsJobQueue``."""
    dlq = lane + DLQ_SUFFIX
    with sdk_errors(f"creating the queues of lane {lane}"):
        dlq_url = client.create_queue(
            QueueName=dlq,
            Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_S), "SqsManagedSseEnabled": "true"},
        )["QueueUrl"]
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        url = client.create_queue(
            QueueName=lane,
            Attributes={
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": int(max_receives)}),
                "SqsManagedSseEnabled": "true",
            },
        )["QueueUrl"]
    return {lane: url, dlq: dlq_url}
