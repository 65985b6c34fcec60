"""Local adapters: SQLite item table and job queue, folder model store, folder offline locations."""
