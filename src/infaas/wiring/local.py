"""Wires the local adapters (SQLite, a folder) from settings."""

from __future__ import annotations

from infaas.adapters.local.folder import FolderModelStore
from infaas.adapters.local.secret import private_dir
from infaas.adapters.local.sqlite import SqliteDatabase, SqliteItemTable, SqliteJobQueue
from infaas.app.store import MetadataStore
from infaas.core.settings import Settings


class LocalAdapters:
    def __init__(self, settings: Settings) -> None:
        private_dir(settings.data_dir)  # 0700: the catalogue, key hashes, models and secret are the stack's alone
        self.db = SqliteDatabase(settings.db_path)
        self.store = MetadataStore(SqliteItemTable(self.db))
        self.models = FolderModelStore(settings.models_dir)
        self.queue = SqliteJobQueue(self.db)
