"""Offline jobs' inputs and outputs under ``s3://bucket/prefix`` (``app.offline.Location``)."""

from __future__ import annotations

from botocore.exceptions import ClientError

from infaas.adapters.aws._sdk import (
    NOT_FOUND_CODES,
    RETRYABLE_CODES,
    default_client,
    error_code,
    translate,
)
from infaas.core.errors import Forbidden, InfaasError, InvalidInput, NotFound

_DENIED_CODES = frozenset({"AccessDenied", "403", "AllAccessDisabled", "InvalidObjectState", "KMS.DisabledException"})


class S3Location:
    """``s3://bucket/prefix``; one PutObject is atomic in S3."""

    def __init__(self, uri: str, client=None) -> None:
        rest = uri[len("s3://"):]
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise InvalidInput(f"location {uri!r} names no bucket", field="location")
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.uri = uri
        self.client = client if client is not None else default_client("s3")

    def list(self) -> list[str]:
        names, token = [], None
        try:
            while True:
                kw = {"Bucket": self.bucket, "Prefix": self.prefix, **({"ContinuationToken": token} if token else {})}
                page = self.client.list_objects_v2(**kw)
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(self.prefix):]
                    if name and "/" not in name:
                        names.append(name)
                if not page.get("IsTruncated"):
                    return sorted(names)
                token = page["NextContinuationToken"]
        except ClientError as exc:
            raise InvalidInput(f"cannot list {self.uri!r}: {exc.response['Error'].get('Code')}", field="input") from None

    def _error(self, exc: ClientError, doing: str, name: str, field: str) -> InfaasError:
        """What a failed GetObject / PutObject means for the item: a vanished file (NotFound) or a refusal
        (Forbidden) marks it failed naming the file; throttling and S3 faults stay ``Unavailable`` (retried)."""
        code = error_code(exc)
        where = f"s3://{self.bucket}/{self.prefix}{name}"
        if code in RETRYABLE_CODES:
            return translate(exc, f"{doing} {where}")
        if code in NOT_FOUND_CODES or code == "NoSuchBucket":
            return NotFound(f"{doing} {where}: no such file ({code})", field=field)
        if code in _DENIED_CODES:
            return Forbidden(f"{doing} {where}: access denied ({code})", field=field)
        return InvalidInput(f"{doing} {where}: {code or type(exc).__name__}", field=field)

    def read(self, name: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()
        except ClientError as exc:
            raise self._error(exc, "cannot read", name, "input") from None

    def exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + name)
            return True
        except ClientError:
            return False

    def write_atomic(self, name: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)
        except ClientError as exc:
            raise self._error(exc, "cannot write", name, "output") from None
