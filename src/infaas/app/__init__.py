"""Use cases: register and build (control plane), answer queries (data plane), offline jobs,
the autoscaler's control period, tenants and keys, the metadata store.

They talk to the world only through the ports of ``infaas.core.ports`` and the
runtimes of ``infaas.runtime``. May import: ``infaas.core``, ``infaas.runtime``;
never an SDK, a web framework or an adapter.
"""
