"""The HTTP API (a front end): FastAPI app factory, control-plane, data-plane and job routers,
and the API on Lambda (``aws``: identity behind API Gateway).

Routes decode, call one use case of ``infaas.app``, encode. May import: ``infaas.wiring`` and
everything below it (``app``, ``adapters``, ``runtime``, ``core``); never ``worker`` or ``sim``.
"""
