"""S3 adapter: the model store in one bucket, with a local cache for ``local_path``.

Object keys are the store's keys unchanged (``architectures/<name>/<hash>.onnx``,
``variants/<architecture>/<variant id>.onnx``, ``uploads/<id>/...``), checked with the same
``check_key`` as the folder store, so a key that is unsafe as a path on a
worker's disk is refused before anything is sent.

Why the choices below:

* ``put`` is a single ``PutObject``: S3 makes a new object version visible
  whole or not at all, which is the atomicity the port asks for. Model files
  are well under PutObject's 5 GB limit (uploads are capped far lower).
* ``local_path`` is what runtimes need (onnxruntime opens a path). The cache
  is keyed by the key *and* the object's ETag, so an object that was
  overwritten is downloaded again while a file somebody already opened is
  never modified: each download goes to a temporary file that is renamed into
  place, and a new ETag gets a new path.
* ``get`` of a missing key and ``local_path`` of one are ``NotFound``;
  ``delete`` of a missing key is a no-op (S3's DeleteObject already is).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator

from infaas.adapters.aws._sdk import default_client, sdk_errors
from infaas.core.errors import NotFound
from infaas.core.keys import check_key

_ETAG = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def default_cache_dir() -> str:
    """Under the system temporary folder: the only writable place on Lambda,
    and fine for a worker (a lost cache is only a re-download)."""
    return os.path.join(tempfile.gettempdir(), "infaas-model-cache")


class S3ModelStore:
    """``ModelStore`` on one S3 bucket. ``local_path`` is a cached download."""

    def __init__(self, bucket: str, client: Any = None, cache_dir: str | None = None) -> None:
        self.bucket = bucket
        self.client = client if client is not None else default_client("s3")
        # One cache folder per bucket, so two stores never mix their files.
        self.cache_dir = os.path.join(os.path.abspath(cache_dir or default_cache_dir()), bucket)

    def put(self, key: str, data: bytes) -> None:
        check_key(key)
        with sdk_errors(f"writing model file {key!r}"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get(self, key: str) -> bytes:
        check_key(key)
        with _not_found(key), sdk_errors(f"reading model file {key!r}"):
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read()

    def exists(self, key: str) -> bool:
        return self._etag(key) is not None

    def local_path(self, key: str) -> str:
        """The cached copy for the object's current ETag, downloaded if needed.

        One HEAD request when the cache is current. The download names the file
        after the ETag of the response it came from (not the HEAD's), so the
        name always matches the content even if the object changed in between.
        """
        etag = self._etag(key)
        if etag is None:
            raise NotFound(f"no model file {key!r}", field="key")
        path = self._cache_path(key, etag)
        if os.path.isfile(path):
            return path
        with _not_found(key), sdk_errors(f"downloading model file {key!r}"):
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            path = self._cache_path(key, _clean_etag(response.get("ETag", etag)))
            if os.path.isfile(path):
                return path
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    shutil.copyfileobj(response["Body"], f, length=1 << 20)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        return path

    def delete(self, key: str) -> None:
        check_key(key)
        with sdk_errors(f"deleting model file {key!r}"):
            self.client.delete_object(Bucket=self.bucket, Key=key)
        # Drop this process's cached copies too; a reader holding one open keeps it.
        shutil.rmtree(self._cache_folder(key), ignore_errors=True)

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        with sdk_errors(f"listing model files under {prefix!r}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys += [obj["Key"] for obj in page.get("Contents", [])]
        return sorted(keys)

    # -- helpers ----------------------------------------------------------------
    def _etag(self, key: str) -> str | None:
        """The object's ETag, or None when there is no such object."""
        check_key(key)
        try:
            with sdk_errors(f"looking up model file {key!r}"):
                response = self.client.head_object(Bucket=self.bucket, Key=key)
        except NotFound:
            return None
        return _clean_etag(response["ETag"])

    def _cache_folder(self, key: str) -> str:
        # A digest, not the key itself: keys "a" and "a/b" can both exist in S3
        # but not as a file and a folder of the same name.
        return os.path.join(self.cache_dir, hashlib.sha256(key.encode()).hexdigest()[:32])

    def _cache_path(self, key: str, etag: str) -> str:
        # The last key segment stays the file name, so runtimes that look at the
        # extension (.onnx, .npz) see the same name as in the folder store.
        return os.path.join(self._cache_folder(key), etag, key.rsplit("/", 1)[-1])


def _clean_etag(etag: str) -> str:
    """ETags come quoted (and are hex, or hex-N for multipart uploads); anything
    unexpected is hashed so it is always a safe folder name."""
    etag = etag.strip('"')
    return etag if _ETAG.match(etag) else hashlib.sha256(etag.encode()).hexdigest()


@contextmanager
def _not_found(key: str) -> Iterator[None]:
    """Turn "no such key" into a NotFound that names the key."""
    try:
        yield
    except NotFound as exc:
        raise NotFound(f"no model file {key!r}", field="key") from exc


def create_bucket(client: Any, name: str) -> None:
    """Create the model bucket as production runs it (the CDK stack declares the
    same): no public access, encryption at rest (SSE-S3), versioning on so an
    overwritten or deleted model can be recovered for 30 days."""
    region = client.meta.region_name
    with sdk_errors(f"creating bucket {name}"):
        if region and region != "us-east-1":
            client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        else:
            client.create_bucket(Bucket=name)
        client.put_public_access_block(
            Bucket=name,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        client.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        client.put_bucket_lifecycle_configuration(
            Bucket=name,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "expire-old-versions",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                    }
                ]
            },
        )
