"""The metadata store: domain records kept as items of an ``ItemTable``.

Access patterns (each one key lookup or one query; no joins, no scans), the
same on SQLite and DynamoDB:

| record       | pk                 | sk            | gsi1pk        | gsi1sk          |
|--------------|--------------------|---------------|---------------|-----------------|
| task         | ``TASKS``          | task id       |               |                 |
| architecture | ``ARCH#<name>``    | ``A``         | ``TASK#<id>`` | ``ARCH#<name>`` |
| variant      | ``ARCH#<name>``    | ``V#<id>``    | ``TASK#<id>`` | ``V#<id>``      |
| worker       | ``WORKER#<id>``    | ``W``         | ``WORKERS``   | worker id       |
| catalogue    | ``META``           | ``CATALOGUE`` |               |                 |
| event        | ``EVENTS``         | time#id       |               |                 |
| policy state | ``STATE#<name>``   | ``S``         |               |                 |
| API key      | ``KEY#<key id>``   | ``K``         | ``KEYS``      | tenant#key id   |

Registration is a conditional create of the architecture item; worker items
carry ``expires_at`` (heartbeat + TTL) so a dead worker disappears by itself.
Every catalogue change bumps the version of the ``META/CATALOGUE`` item, so
readers that cache the catalogue reload only when it changed.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Iterable

from infaas.core.domain import Architecture, Variant, Worker
from infaas.core.errors import ConditionFailed, NotFound
from infaas.core.ports import ItemTable


class MetadataStore:
    def __init__(self, table: ItemTable, *, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.clock = clock

    # -- catalogue --------------------------------------------------------
    def catalogue_version(self) -> int:
        item = self.table.get("META", "CATALOGUE")
        return int(item["version"]) if item else 0

    def _bump_catalogue(self) -> None:
        self.table.put({"pk": "META", "sk": "CATALOGUE", "body": {"at": self.clock()}})

    def create_architecture(self, arch: Architecture) -> Architecture:
        """Create the architecture; if one of that name exists, return it unchanged.

        Callers compare ``sha256`` to tell "same file again" from a conflict.
        """
        item = {
            "pk": f"ARCH#{arch.name}",
            "sk": "A",
            "gsi1pk": f"TASK#{arch.task}",
            "gsi1sk": f"ARCH#{arch.name}",
            "body": arch.to_dict(),
        }
        try:
            self.table.put(item, expect_version=0)
        except ConditionFailed:
            return self.get_architecture(arch.name)
        self._claim_task(arch.task, arch.tenant)
        self._bump_catalogue()
        return arch

    def _claim_task(self, task: str, tenant: str) -> None:
        """The first tenant to register into a task owns it (``task_owners``); later ones do not."""
        try:
            self.table.put({"pk": "TASKS", "sk": task, "body": {"task": task, "owner": tenant}}, expect_version=0)
        except ConditionFailed:
            pass

    def task_owners(self) -> dict[str, str]:
        """task -> the tenant that owns it: its task queries are answered by its own models and the
        ones it shared, and by no one else's (``core.selection._visible``)."""
        out = {}
        for item in self.table.query("TASKS"):
            owner = item["body"].get("owner")
            if owner is None:  # recorded before tasks had owners: the tenant of its first architecture
                first = sorted(self.architectures(item["sk"]), key=lambda a: a.created_at)[:1]
                owner = first[0].tenant if first else None
            if owner:
                out[item["sk"]] = owner
        return out

    def get_architecture(self, name: str) -> Architecture:
        item = self.table.get(f"ARCH#{name}", "A")
        if item is None:
            raise NotFound(f"no architecture named {name!r}", field="architecture")
        return Architecture.from_dict(item["body"])

    def find_architecture(self, name: str) -> Architecture | None:
        item = self.table.get(f"ARCH#{name}", "A")
        return Architecture.from_dict(item["body"]) if item else None

    def delete_architecture(self, name: str) -> list[Variant]:
        """Delete an architecture and its variants; returns the variants removed."""
        variants = self.variants_of(name)
        for v in variants:
            self.table.delete(f"ARCH#{name}", f"V#{v.id}")
        self.table.delete(f"ARCH#{name}", "A")
        self._bump_catalogue()
        return variants

    def tasks(self) -> list[str]:
        return [item["sk"] for item in self.table.query("TASKS")]

    def architectures(self, task: str | None = None) -> list[Architecture]:
        tasks = [task] if task else self.tasks()
        out = []
        for t in tasks:
            out += [Architecture.from_dict(i["body"]) for i in self.table.query_index(f"TASK#{t}", "ARCH#")]
        return out

    def put_variant(self, variant: Variant) -> Variant:
        self.table.put(
            {
                "pk": f"ARCH#{variant.architecture}",
                "sk": f"V#{variant.id}",
                "gsi1pk": f"TASK#{variant.task}",
                "gsi1sk": f"V#{variant.id}",
                "body": variant.to_dict(),
            }
        )
        self._bump_catalogue()
        return variant

    def get_variant(self, variant_id: str) -> Variant:
        arch = variant_id.split(":", 1)[0]
        item = self.table.get(f"ARCH#{arch}", f"V#{variant_id}")
        if item is None:
            raise NotFound(f"no variant {variant_id!r}", field="variant")
        return Variant.from_dict(item["body"])

    def variants_of(self, architecture: str) -> list[Variant]:
        return [Variant.from_dict(i["body"]) for i in self.table.query(f"ARCH#{architecture}", "V#")]

    def variants_for_task(self, task: str) -> list[Variant]:
        return [Variant.from_dict(i["body"]) for i in self.table.query_index(f"TASK#{task}", "V#")]

    def all_variants(self) -> list[Variant]:
        out: list[Variant] = []
        for t in self.tasks():
            out += self.variants_for_task(t)
        return out

    # -- workers ----------------------------------------------------------
    def heartbeat(self, worker: Worker, *, ttl_s: float) -> None:
        """Write the worker's record; it disappears ``ttl_s`` after its last heartbeat."""
        self.table.put(
            {
                "pk": f"WORKER#{worker.id}",
                "sk": "W",
                "gsi1pk": "WORKERS",
                "gsi1sk": worker.id,
                "expires_at": worker.heartbeat_at + ttl_s,
                "body": worker.to_dict(),
            }
        )

    def workers(self) -> list[Worker]:
        return [Worker.from_dict(i["body"]) for i in self.table.query_index("WORKERS")]

    def get_worker(self, worker_id: str) -> Worker:
        item = self.table.get(f"WORKER#{worker_id}", "W")
        if item is None:
            raise NotFound(f"no live worker {worker_id!r}", field="worker")
        return Worker.from_dict(item["body"])

    def remove_worker(self, worker_id: str) -> None:
        self.table.delete(f"WORKER#{worker_id}", "W")

    # -- API keys (only hashes of secrets; see identity.py) ------------------
    def put_key(self, key_id: str, record: dict[str, Any]) -> None:
        self.table.put({"pk": f"KEY#{key_id}", "sk": "K", "gsi1pk": "KEYS",
                        "gsi1sk": f"{record['tenant']}#{key_id}", "body": {**record, "key_id": key_id}})

    def get_key(self, key_id: str) -> dict[str, Any] | None:
        item = self.table.get(f"KEY#{key_id}", "K")
        return item["body"] if item else None

    def keys(self, tenant: str | None = None) -> list[dict[str, Any]]:
        return [i["body"] for i in self.table.query_index("KEYS", f"{tenant}#" if tenant else "")]

    # -- events and policy state -------------------------------------------
    def record_event(self, kind: str, reason: str, **data: Any) -> None:
        now = self.clock()
        self.table.put(
            {
                "pk": "EVENTS",
                "sk": f"{now:017.6f}#{uuid.uuid4().hex[:8]}",
                "body": {"at": now, "kind": kind, "reason": reason, "data": data},
            }
        )

    def events(self, since: float = 0.0) -> list[dict[str, Any]]:
        return [i["body"] for i in self.table.query("EVENTS") if i["body"]["at"] >= since]

    def get_state(self, name: str) -> tuple[dict[str, Any], int]:
        """Policy state and its version (0 when none was saved yet)."""
        item = self.table.get(f"STATE#{name}", "S")
        return (item["body"], int(item["version"])) if item else ({}, 0)

    def put_state(self, name: str, state: dict[str, Any], *, expect_version: int) -> None:
        self.table.put({"pk": f"STATE#{name}", "sk": "S", "body": state}, expect_version=expect_version)


def ready_variants(variants: Iterable[Variant]) -> list[Variant]:
    return [v for v in variants if v.status == "ready" and v.profile is not None]
