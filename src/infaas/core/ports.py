"""The ports: what the core needs from the outside world, as Protocols.

Every port has a local adapter (``infaas.adapters.local``) and an AWS adapter
(``infaas.adapters.aws``); one contract test suite (``tests/contract``) runs
against each implementation.

The metadata store is split in two layers so that SQLite and DynamoDB behave
the same by construction:

* ``ItemTable`` is the small key-value surface both engines share: items with
  a partition key ``pk``, a sort key ``sk``, one secondary index
  (``gsi1pk``/``gsi1sk``), an integer ``version`` for conditional writes and an
  optional ``expires_at`` (TTL). No joins, no scans.
* ``infaas.app.store.MetadataStore`` keeps the domain records on top of it.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

Item = dict[str, Any]


@runtime_checkable
class ItemTable(Protocol):
    """Key-value items with one secondary index and conditional writes.

    Items are dicts with ``pk``, ``sk`` (strings), optionally ``gsi1pk`` and
    ``gsi1sk`` (strings), ``expires_at`` (epoch seconds), and ``body`` (a
    JSON-serialisable dict). ``version`` is managed by the table: it starts at
    1 and grows by one on each conditional write.
    """

    def get(self, pk: str, sk: str) -> Item | None: ...

    def put(self, item: Mapping[str, Any], *, expect_version: int | None = None) -> Item:
        """Write ``item``. ``expect_version=0`` means "only if absent"; a positive
        value means "only if the stored version equals it"; ``None`` writes
        unconditionally. Raises ``ConditionFailed`` when the condition fails.
        Returns the item as stored (with its new version)."""
        ...

    def delete(self, pk: str, sk: str, *, expect_version: int | None = None) -> None: ...

    def query(self, pk: str, sk_prefix: str = "") -> list[Item]:
        """Items of one partition whose sort key starts with ``sk_prefix``, by sort key."""
        ...

    def query_index(self, gsi1pk: str, sk_prefix: str = "") -> list[Item]:
        """Items whose ``gsi1pk`` equals the value and ``gsi1sk`` starts with the prefix."""
        ...


@runtime_checkable
class ModelStore(Protocol):
    """Model files (original uploads, generated variants, validation data).

    Keys are relative, '/'-separated, made of safe names only; writes are
    atomic (a reader sees the whole old file or the whole new one).
    """

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def local_path(self, key: str) -> str:
        """A path on this machine holding the file (a cache copy for remote stores)."""
        ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> list[str]: ...


@runtime_checkable
class JobQueue(Protocol):
    """At-least-once queue of background work, one lane per ``lane`` name.

    A received message is invisible for ``visibility_s`` (``extend`` restarts that from now);
    ``ack`` removes it;
    after ``max_receives`` deliveries without ack it moves to the dead-letter
    lane ``<lane>-dlq``.
    """

    def send(self, lane: str, body: Mapping[str, Any]) -> str: ...

    def receive(self, lane: str, *, visibility_s: float = 60.0) -> tuple[str, dict[str, Any]] | None:
        """One message as (receipt, body), or None when the lane is empty."""
        ...

    def ack(self, lane: str, receipt: str) -> None: ...

    def extend(self, lane: str, receipt: str, visibility_s: float) -> bool:
        """The message received with ``receipt`` stays invisible ``visibility_s`` from now: a
        consumer still at it says so. False when the message is gone (acknowledged or
        dead-lettered), past the most time a queue holds a message in flight (SQS: 12 hours), or,
        where the queue can tell (SQLite; SQS may accept a stale receipt), received again by
        another consumer since."""
        ...

    def depth(self, lane: str) -> int: ...


@runtime_checkable
class Fleet(Protocol):
    """Workers of one deployment, one group per hardware type.

    ``set_desired`` only ever adds capacity it is asked for; removing a worker
    is ``drain``: it stops taking new work, finishes what it has, deregisters,
    and only then is its machine (or process) released.
    """

    def desired(self) -> dict[str, int]: ...

    def set_desired(self, hardware: str, count: int) -> None: ...

    def drain(self, worker_id: str) -> None: ...


class WorkerClient:
    """Sends a frame to a worker; implementations raise ``WorkerFault`` on a
    connection failure, reset or timeout, and pass domain errors through."""

    takes_parts = False  # True: ``frame`` may be a list of buffers (``tensors.encode_parts``), not one bytes

    async def infer(self, url: str, variant_id: str, frame: bytes, objective_ms: float | None,
                    model: str | None = None) -> bytes:  # pragma: no cover
        """``model``: the variant's file (``Variant.model_key``) as the caller's catalogue has it; a
        worker holding a replica of another file (the name was deleted and registered again)
        loads the variant afresh rather than answer with the old model."""
        raise NotImplementedError

    async def close(self) -> None:
        return None


class FunctionTier:
    """Runs one query's rows of a ``lambda`` variant (the serverless CPU tier, ``core/tier.py``) in a
    function: AWS Lambda (``adapters/aws/functions.py``) or local processes standing in for its
    execution environments (``adapters/local/functions.py``).

    ``invoke`` sends the rows synchronously and answers ``(outputs, info)``: the arrays by output
    name, and what the function reported about the invocation -- ``cold`` (it loaded the model),
    ``init_ms`` (what it spent that a warm one does not), ``run_ms``, ``memory_mb``, ``billed_ms``
    (the duration as billed: init and run, rounded up to the millisecond), ``function`` (which
    function ran it). Implementations raise the product's errors: ``Unavailable`` (503, with
    ``retry_after_s``) when the function is throttled (no concurrency left), ``PayloadTooLarge``
    (413) for a request or answer over the synchronous limit (``tier.MAX_PAYLOAD_BYTES``),
    ``VariantFault`` (502) when the function failed (the model, the runtime, a timeout),
    ``WorkerFault`` (502) when the tier could not be reached (a connection refused or reset, a read
    timeout of the call: the variant is not to blame), and the function's own refusals as themselves
    (``InvalidInput``, ``NotFound``)."""

    # invocations that may run at once before the function throttles (the selector's ``TierState``
    # plans with it): the account's quota on AWS, the instances this machine runs locally
    concurrency: int = 1000

    async def invoke(self, variant_id: str, model_key: str, arrays: Mapping[str, Any], *, memory_mb: int,
                     outputs: tuple[str, ...] | None = None, query_id: str | None = None,
                     timeout_s: float | None = None) -> tuple[dict[str, Any], dict[str, Any]]:  # pragma: no cover
        raise NotImplementedError

    async def close(self) -> None:
        return None
