"""The lean HTTP/1.1 path for inference routes (``hotpath``) and its ASGI fallback (``asgi``),
shared by the API process and the workers. May import: ``infaas.core``.
"""
