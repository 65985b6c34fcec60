"""Adapters: the ports of ``infaas.core.ports`` on real parts (``local``: SQLite and a folder;
``aws``: DynamoDB, S3, SQS, Auto Scaling, CloudWatch), the HTTP transport (``http``) and the
client the API uses to reach workers (``workerclient``).

May import: ``infaas.core``, ``infaas.runtime``. ``local``, ``aws`` and ``http`` never import each other.
"""
