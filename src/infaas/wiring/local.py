"""Wires the local adapters (SQLite, a folder) from settings."""

from __future__ import annotations

import os

from infaas.adapters.local.folder import FolderModelStore
from infaas.adapters.local.sqlite import SqliteDatabase, SqliteItemTable, SqliteJobQueue
from infaas.app.store import MetadataStore
from infaas.core.settings import Settings


class LocalAdapters:
    def __init__(self, settings: Settings) -> None:
        os.makedirs(settings.data_dir, exist_ok=True)
        self.db = SqliteDatabase(settings.db_path)
        self.store = MetadataStore(SqliteItemTable(self.db))
        self.models = FolderModelStore(settings.models_dir)
        self.queue = SqliteJobQueue(self.db)
