"""Local adapters: SQLite item table and job queue, folder model store, folder offline locations,
worker processes (the local ``Fleet``, ``processes.py``)."""
