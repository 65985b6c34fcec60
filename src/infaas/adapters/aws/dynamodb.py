"""DynamoDB adapter: the item table behind the metadata store.

One table holds every record (single-table design, see ``infaas.app.store`` and
``docs/aws-tables.md``): partition key ``pk`` and sort key ``sk`` (both
strings), one global secondary index ``gsi1`` on ``gsi1pk``/``gsi1sk``
projecting all attributes, and DynamoDB TTL on ``expires_at``.

Why the choices below:

* ``body`` is stored as a JSON *string* attribute, not as a native map.
  DynamoDB numbers are decimals of at most 38 digits in roughly 1e-130 ..
  1e126 and there is no float type, so a native map could not hold
  ``1e-300`` or ``1.7976931348623157e308`` and would hand floats back as
  ``Decimal``; the JSON text round-trips every JSON value exactly, the way the
  SQLite adapter stores it. Nothing ever queries inside a body, so nothing is
  lost. The text is ASCII (non-ASCII characters as JSON escapes), so even a
  lone surrogate survives, which raw UTF-8 could not carry. Every other
  attribute is encoded with boto3's own ``TypeSerializer``/``TypeDeserializer``.
* DynamoDB TTL deletes expired items lazily (typically within a few days), so
  expired items are filtered out on every read using the injected clock, and
  conditional writes treat an expired item as absent, exactly like SQLite.
* ``version`` is managed here: a conditional write states the version it
  expects in a ``ConditionExpression``, so two writers that read the same
  version cannot both win (the loser gets ``ConditionFailed``).
* ``get`` and ``query`` are strongly consistent reads (read-your-writes, as
  with SQLite). ``query_index`` reads a GSI, which DynamoDB only offers
  eventually consistent: a write shows up there within a fraction of a second.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from infaas.adapters.aws._sdk import default_client, error_code, sdk_errors, translate
from infaas.core.errors import ConditionFailed, InvalidInput, Unavailable
from infaas.core.ports import Item

INDEX_NAME = "gsi1"
TTL_ATTRIBUTE = "expires_at"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

# Expression attribute names: every attribute goes through a placeholder, so
# no attribute name can collide with DynamoDB's long list of reserved words.
_NAMES = {
    "#pk": "pk",
    "#sk": "sk",
    "#g1pk": "gsi1pk",
    "#g1sk": "gsi1sk",
    "#v": "version",
    "#exp": TTL_ATTRIBUTE,
    "#body": "body",
}
# An item is live when it has no expiry or its expiry is still ahead; it is
# absent when it does not exist or has expired (DynamoDB has not deleted it yet).
_LIVE = "(attribute_not_exists(#exp) OR #exp > :now)"
_ABSENT = "(attribute_not_exists(#pk) OR #exp <= :now)"

# How many times an unconditional write retries when it races another writer
# over an expired item (see ``_put_unconditional``) before it reports 503.
_MAX_RACE_RETRIES = 5
BATCH_WRITE = 25  # items per BatchWriteItem (a DynamoDB limit)
_MAX_BATCH_ROUNDS = 8


def _names(*placeholders: str) -> dict[str, str]:
    """Only the placeholders an expression uses: DynamoDB rejects unused ones."""
    return {p: _NAMES[p] for p in placeholders}


def _number(value: Any, field: str) -> Decimal:
    """A float or int as the exact decimal DynamoDB stores (``repr`` is the
    shortest text that reads back as the same float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{field} must be a number, got {value!r}", field=field)
    number = Decimal(value) if isinstance(value, int) else Decimal(repr(float(value)))
    if not number.is_finite():
        raise InvalidInput(f"{field} must be finite, got {value!r}", field=field)
    return number


def _body_text(item: Mapping[str, Any]) -> str:
    try:
        return json.dumps(item.get("body", {}), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"item body is not JSON-serialisable: {exc}", field="body") from exc


def _attributes(item: Mapping[str, Any], version: int) -> dict[str, Any]:
    """The plain attribute values of ``item`` as stored (only the known attributes,
    like the SQLite adapter's columns)."""
    plain: dict[str, Any] = {"pk": item["pk"], "sk": item["sk"], "version": version, "body": _body_text(item)}
    for name in ("gsi1pk", "gsi1sk"):
        if item.get(name) is not None:
            plain[name] = item[name]
    if item.get(TTL_ATTRIBUTE) is not None:
        plain[TTL_ATTRIBUTE] = _number(item[TTL_ATTRIBUTE], TTL_ATTRIBUTE)
    return plain


def _serialize(plain: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(value) for name, value in plain.items()}


def _decode(attrs: Mapping[str, Any]) -> Item:
    raw = {name: _deserializer.deserialize(value) for name, value in attrs.items()}
    item: Item = {
        "pk": raw["pk"],
        "sk": raw["sk"],
        "version": int(raw["version"]),
        "body": json.loads(raw["body"]),
    }
    if raw.get("gsi1pk") is not None:
        item["gsi1pk"], item["gsi1sk"] = raw["gsi1pk"], raw.get("gsi1sk")
    if raw.get(TTL_ATTRIBUTE) is not None:
        item[TTL_ATTRIBUTE] = float(raw[TTL_ATTRIBUTE])
    return item


def _is_live(attrs: Mapping[str, Any], now: float) -> bool:
    expires = attrs.get(TTL_ATTRIBUTE)
    return expires is None or float(_deserializer.deserialize(expires)) > now


class DynamoItemTable:
    """``ItemTable`` on one DynamoDB table (see the module docstring for the layout)."""

    def __init__(self, table_name: str, client: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.table_name = table_name
        self.client = client if client is not None else default_client("dynamodb")
        self.clock = clock
        self._pause = time.sleep

    def _key(self, pk: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": pk}, "sk": {"S": sk}}

    def _now(self) -> dict[str, Any]:
        return _serializer.serialize(_number(self.clock(), "now"))

    # -- reads ----------------------------------------------------------------
    def get(self, pk: str, sk: str) -> Item | None:
        with sdk_errors(f"reading item {pk}/{sk}"):
            response = self.client.get_item(TableName=self.table_name, Key=self._key(pk, sk), ConsistentRead=True)
        attrs = response.get("Item")
        if not attrs or not _is_live(attrs, self.clock()):
            return None
        return _decode(attrs)

    def query(self, pk: str, sk_prefix: str = "") -> list[Item]:
        condition, names, values = "#pk = :pk", ["#pk"], {":pk": {"S": pk}}
        if sk_prefix:  # begins_with rejects an empty prefix
            condition += " AND begins_with(#sk, :prefix)"
            names.append("#sk")
            values[":prefix"] = {"S": sk_prefix}
        return list(self._query(f"querying partition {pk}", condition, names, values, ConsistentRead=True))

    def query_index(self, gsi1pk: str, sk_prefix: str = "") -> list[Item]:
        condition, names, values = "#g1pk = :pk", ["#g1pk"], {":pk": {"S": gsi1pk}}
        if sk_prefix:
            condition += " AND begins_with(#g1sk, :prefix)"
            names.append("#g1sk")
            values[":prefix"] = {"S": sk_prefix}
        return list(self._query(f"querying index {gsi1pk}", condition, names, values, IndexName=INDEX_NAME))

    def _query(
        self, what: str, condition: str, names: list[str], values: dict[str, Any], **extra: Any
    ) -> Iterator[Item]:
        """All pages of one query, in sort key order, expired items filtered out
        on the server (they still cost read capacity until TTL deletes them)."""
        request = {
            "TableName": self.table_name,
            "KeyConditionExpression": condition,
            "FilterExpression": _LIVE,
            "ExpressionAttributeNames": _names(*names, "#exp"),
            "ExpressionAttributeValues": {**values, ":now": self._now()},
            **extra,
        }
        while True:
            with sdk_errors(what):
                response = self.client.query(**request)
            for attrs in response.get("Items", []):
                yield _decode(attrs)
            if "LastEvaluatedKey" not in response:
                return
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    # -- writes ---------------------------------------------------------------
    def put(self, item: Mapping[str, Any], *, expect_version: int | None = None) -> Item:
        if expect_version is None:
            version = self._put_unconditional(item)
        elif expect_version == 0:
            # Create: only if absent, where an expired item counts as absent.
            self._put_if(item, 1, _ABSENT, ["#pk", "#exp"], {})
            version = 1
        else:
            # Update: only if the live item is at the expected version.
            expected = {":expected": {"N": str(int(expect_version))}}
            self._put_if(item, expect_version + 1, f"#v = :expected AND {_LIVE}", ["#v", "#exp"], expected)
            version = expect_version + 1
        stored = dict(item)
        stored["version"] = version
        return stored

    def put_many(self, items: list[Mapping[str, Any]]) -> int:
        """Write new items, unconditionally, 25 to a ``BatchWriteItem`` (each at version 1: for items
        nobody else writes yet, such as an offline job's work items). Items DynamoDB leaves unprocessed
        (throttling) are sent again, with a growing pause, until all are in."""
        for start in range(0, len(items), BATCH_WRITE):
            pending = [{"PutRequest": {"Item": _serialize(_attributes(i, 1))}} for i in items[start:start + BATCH_WRITE]]
            for attempt in range(_MAX_BATCH_ROUNDS):
                with sdk_errors(f"writing {len(pending)} items"):
                    response = self.client.batch_write_item(RequestItems={self.table_name: pending})
                pending = (response.get("UnprocessedItems") or {}).get(self.table_name) or []
                if not pending:
                    break
                self._pause(min(0.05 * 2 ** attempt, 2.0))
            else:
                raise Unavailable(f"DynamoDB left {len(pending)} items unwritten after {_MAX_BATCH_ROUNDS} rounds")
        return len(items)

    def _put_if(
        self, item: Mapping[str, Any], version: int, condition: str, names: list[str], values: dict[str, Any]
    ) -> None:
        pk, sk = item["pk"], item["sk"]
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=_serialize(_attributes(item, version)),
                ConditionExpression=condition,
                ExpressionAttributeNames=_names(*names),
                ExpressionAttributeValues={**values, ":now": self._now()},
                # The loser learns the version it lost to without another read.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                old = exc.response.get("Item") or {}
                live = bool(old.get("version")) and _is_live(old, self.clock())
                current = int(_deserializer.deserialize(old["version"])) if live else 0
                raise ConditionFailed(
                    f"item {pk}/{sk} is at version {current}, expected {version - 1}", current_version=current
                ) from exc
            raise translate(exc, f"writing item {pk}/{sk}") from exc
        except BotoCoreError as exc:
            raise translate(exc, f"writing item {pk}/{sk}") from exc

    def _put_unconditional(self, item: Mapping[str, Any]) -> int:
        """Overwrite the item and bump its version in one request.

        ``UpdateItem`` computes the new version on the server
        (``if_not_exists(version, 0) + 1``), so concurrent unconditional writers
        still get distinct, increasing versions. An expired item must restart at
        version 1 instead (it counts as absent), which an update expression
        cannot express: the update is conditioned on the item being live, and
        when that fails the item is replaced by a create-if-absent. If another
        writer revives the item in between, start over.
        """
        pk, sk = item["pk"], item["sk"]
        plain = _attributes(item, 0)
        sets, removes, values = ["#body = :body", "#v = if_not_exists(#v, :zero) + :one"], [], {}
        values[":body"] = _serializer.serialize(plain["body"])
        values[":zero"], values[":one"] = {"N": "0"}, {"N": "1"}
        names = ["#body", "#v", "#exp"]
        for placeholder, name in (("#g1pk", "gsi1pk"), ("#g1sk", "gsi1sk"), ("#exp", TTL_ATTRIBUTE)):
            if name in plain:
                sets.append(f"{placeholder} = :{placeholder[1:]}")
                values[f":{placeholder[1:]}"] = _serializer.serialize(plain[name])
            else:
                removes.append(placeholder)
            if placeholder not in names:
                names.append(placeholder)
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        for _ in range(_MAX_RACE_RETRIES):
            try:
                response = self.client.update_item(
                    TableName=self.table_name,
                    Key=self._key(pk, sk),
                    UpdateExpression=expression,
                    ConditionExpression=_LIVE,
                    ExpressionAttributeNames=_names(*names),
                    ExpressionAttributeValues={**values, ":now": self._now()},
                    ReturnValues="UPDATED_NEW",
                )
                return int(_deserializer.deserialize(response["Attributes"]["version"]))
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise translate(exc, f"writing item {pk}/{sk}") from exc
            except BotoCoreError as exc:
                raise translate(exc, f"writing item {pk}/{sk}") from exc
            # The stored item has expired: replace it as if it were absent.
            try:
                self._put_if(item, 1, _ABSENT, ["#pk", "#exp"], {})
                return 1
            except ConditionFailed:
                continue  # revived meanwhile by another writer: update it instead
        raise Unavailable(f"item {pk}/{sk} is contended; try again", retry_after_s=0.1)

    def delete(self, pk: str, sk: str, *, expect_version: int | None = None) -> None:
        """Delete the item; a missing item is a no-op. As in the SQLite adapter the
        condition compares the stored version, expired or not (0: only if absent)."""
        request: dict[str, Any] = {"TableName": self.table_name, "Key": self._key(pk, sk)}
        if expect_version == 0:
            request.update(ConditionExpression="attribute_not_exists(#pk)", ExpressionAttributeNames=_names("#pk"))
        elif expect_version is not None:
            request.update(
                ConditionExpression="#v = :expected",
                ExpressionAttributeNames=_names("#v"),
                ExpressionAttributeValues={":expected": {"N": str(int(expect_version))}},
            )
        try:
            with sdk_errors(f"deleting item {pk}/{sk}"):
                self.client.delete_item(**request)
        except ConditionFailed as exc:
            raise ConditionFailed(f"item {pk}/{sk} changed", expected_version=expect_version) from exc


def create_table(client: Any, name: str) -> dict[str, Any]:
    """Create the metadata table the way production runs it (the CDK stack
    declares the same): on-demand capacity, encryption at rest with the AWS
    managed KMS key, the ``gsi1`` index and TTL on ``expires_at``. Waits until
    the table is active; returns its description."""
    with sdk_errors(f"creating table {name}"):
        client.create_table(
            TableName=name,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": "gsi1pk", "AttributeType": "S"},
                {"AttributeName": "gsi1sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": INDEX_NAME,
                    "KeySchema": [
                        {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                        {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
            SSESpecification={"Enabled": True, "SSEType": "KMS"},
        )
        client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        client.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
        )
        return client.describe_table(TableName=name)["Table"]
