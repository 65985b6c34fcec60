"""A worker's replica is of one file (``Variant.model_key``): a caller naming another file gets the
current one, never the replica of a model deleted and registered again under the same name, and a
caller whose view is stale cannot make the worker drop the current replica
(``worker.replicas.ReplicaCache.get``)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from fakes import make_profile, make_variant

from infaas.core.errors import NotFound, Unavailable
from infaas.worker.replicas import ReplicaCache

BASE = make_variant("reuse", profile=make_profile({1: (1.0, 1.0)}, load_ms=5))


class Runs:
    def __init__(self, key: str) -> None:
        self.key = key

    def run(self, feed):
        return {"file": self.key}


def cache_over(store: dict) -> tuple[ReplicaCache, list]:
    loads = []

    def current(variant_id: str):
        if variant_id not in store:
            raise NotFound(f"no variant {variant_id}", field="variant")
        return dataclasses.replace(BASE, model_key=store[variant_id])

    def loader(variant_id: str):
        v = current(variant_id)
        loads.append(v.model_key)
        return v, Runs(v.model_key)

    return ReplicaCache(loader, memory_budget_bytes=1 << 30, lookup=current), loads


def test_a_replica_of_another_file_is_loaded_afresh():
    store = {BASE.id: "variants/reuse/aaaa/x.onnx"}
    cache, loads = cache_over(store)

    async def main():
        first = await cache.get(BASE.id, "variants/reuse/aaaa/x.onnx")
        store[BASE.id] = "variants/reuse/bbbb/x.onnx"  # deleted and registered again, another file
        second = await cache.get(BASE.id, "variants/reuse/bbbb/x.onnx")
        return first, second

    first, second = asyncio.run(main())
    assert first.executor.key.endswith("aaaa/x.onnx") and second.executor.key.endswith("bbbb/x.onnx")
    assert loads == ["variants/reuse/aaaa/x.onnx", "variants/reuse/bbbb/x.onnx"]


def test_a_stale_caller_gets_a_retry_and_the_current_replica_stays():
    store = {BASE.id: "variants/reuse/bbbb/x.onnx"}
    cache, loads = cache_over(store)

    async def main():
        current = await cache.get(BASE.id, "variants/reuse/bbbb/x.onnx")
        with pytest.raises(Unavailable):
            await cache.get(BASE.id, "variants/reuse/aaaa/x.onnx")  # its catalogue is from before the change
        return current, cache.replicas.get(BASE.id)

    current, kept = asyncio.run(main())
    assert kept is current and loads == ["variants/reuse/bbbb/x.onnx"]


def test_a_deleted_variant_is_unloaded_when_a_caller_names_another_file():
    store = {BASE.id: "variants/reuse/aaaa/x.onnx"}
    cache, _ = cache_over(store)

    async def main():
        await cache.get(BASE.id, "variants/reuse/aaaa/x.onnx")
        del store[BASE.id]
        with pytest.raises(NotFound):
            await cache.get(BASE.id, "variants/reuse/bbbb/x.onnx")
        return dict(cache.replicas)

    assert asyncio.run(main()) == {}


def test_without_a_file_named_the_loaded_replica_serves():
    store = {BASE.id: "variants/reuse/aaaa/x.onnx"}
    cache, loads = cache_over(store)

    async def main():
        a = await cache.get(BASE.id)
        b = await cache.get(BASE.id)
        return a, b

    a, b = asyncio.run(main())
    assert a is b and len(loads) == 1
