"""The core: the vocabulary, errors, settings, ports and every decision, as pure functions.

Selection, batching, eviction, scaling, reconcile, rate limits: each reads a
snapshot and returns an answer; nothing here reads a store, sends a request or
starts a runtime. May import: the standard library and numpy; no other layer of
``infaas`` and no SDK, runtime, model format or web framework (both checked by
``lint-imports``, see ``[tool.importlinter]`` in pyproject.toml).
"""
