"""The worker (a front end): replicas with a dynamic batcher and an LRU cache, the worker
server, heartbeat, reconcile toward assigned replicas, build-job and offline loops.

May import: ``infaas.wiring`` and below; never ``api`` or ``sim``.
"""
