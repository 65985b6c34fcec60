"""Wires the local adapters (SQLite, a folder) from settings."""

from __future__ import annotations

import os

from ..adapters.local.folder import FolderModelStore
from ..adapters.local.sqlite import SqliteDatabase, SqliteItemTable, SqliteJobQueue
from ..settings import Settings
from ..store import MetadataStore


class LocalAdapters:
    def __init__(self, settings: Settings) -> None:
        os.makedirs(settings.data_dir, exist_ok=True)
        self.db = SqliteDatabase(settings.db_path)
        self.store = MetadataStore(SqliteItemTable(self.db))
        self.models = FolderModelStore(settings.models_dir)
        self.queue = SqliteJobQueue(self.db)
