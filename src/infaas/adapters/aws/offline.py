"""Offline jobs' inputs and outputs under ``s3://bucket/prefix`` (``app.offline.Location``)."""

from __future__ import annotations

from botocore.exceptions import ClientError

from infaas.adapters.aws._sdk import default_client
from infaas.core.errors import InvalidInput


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

    def read(self, name: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()

    def exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + name)
            return True
        except ClientError:
            return False

    def write_atomic(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)
