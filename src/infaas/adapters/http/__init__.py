"""The bare ASGI path for the inference routes (``asgi.serve_asgi``),
shared by the API process and the workers. May import: ``infaas.core``.
"""
