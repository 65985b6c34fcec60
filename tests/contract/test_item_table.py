"""Contract of ``ItemTable`` (see ``infaas.core.ports``), run against every implementation."""

from __future__ import annotations

import pytest

from infaas.core.errors import ConditionFailed
from infaas.core.ports import ItemTable


def item(pk: str, sk: str, body: dict | None = None, **extra) -> dict:
    return {"pk": pk, "sk": sk, "body": body if body is not None else {"v": f"{pk}/{sk}"}, **extra}


def test_implements_the_protocol(item_table):
    assert isinstance(item_table, ItemTable)


def test_get_of_a_missing_item_is_none(item_table):
    assert item_table.get("nope", "nope") is None


def test_put_then_get_returns_keys_index_keys_version_and_body(item_table):
    stored = item_table.put(item("P", "S", {"a": 1}, gsi1pk="G", gsi1sk="g1"))
    assert stored["version"] == 1

    got = item_table.get("P", "S")
    assert got["pk"] == "P" and got["sk"] == "S"
    assert got["gsi1pk"] == "G" and got["gsi1sk"] == "g1"
    assert got["version"] == 1
    assert got["body"] == {"a": 1}
    # The same pk with another sk, or another pk with the same sk, is another item.
    assert item_table.get("P", "S2") is None
    assert item_table.get("P2", "S") is None


def test_body_round_trips_exactly(item_table):
    body = {
        "nested": {"deeper": {"list": [1, 2.5, "three", None, True, {"k": []}]}},
        "floats": [0.1, 1 / 3, 1e-300, 1.7976931348623157e308, -2.5, 0.0],
        "big_int": 2**53 + 1,
        "neg_int": -7,
        "flag": False,
        "none": None,
        "empty": {},
        "text": "héllo ✓ 日本語 🙂 \"quoted\" \\ back\nslash",
        "ключ ✓": "unicode key",
        "": "empty key",
    }
    item_table.put(item("P", "S", body))
    got = item_table.get("P", "S")["body"]

    assert got == body
    # Equality alone would accept 1.0 for 1 or 1 for True: check the types too.
    assert type(got["big_int"]) is int and got["big_int"] == 9007199254740993
    assert type(got["flag"]) is bool
    assert all(type(x) is float for x in got["floats"])
    assert [repr(x) for x in got["floats"]] == [repr(x) for x in body["floats"]]
    assert type(got["nested"]["deeper"]["list"][0]) is int
    assert type(got["nested"]["deeper"]["list"][4]) is bool


def test_body_survives_query_and_query_index_too(item_table):
    body = {"x": {"y": [0.1, "ü"]}}
    item_table.put(item("P", "S", body, gsi1pk="G", gsi1sk="s"))
    assert item_table.query("P")[0]["body"] == body
    assert item_table.query_index("G")[0]["body"] == body


def test_unconditional_put_overwrites_and_increments_version(item_table):
    assert item_table.put(item("P", "S", {"n": 1}))["version"] == 1
    assert item_table.put(item("P", "S", {"n": 2}))["version"] == 2
    assert item_table.put(item("P", "S", {"n": 3}))["version"] == 3
    got = item_table.get("P", "S")
    assert got["version"] == 3
    assert got["body"] == {"n": 3}
    assert len(item_table.query("P")) == 1


def test_expect_version_zero_writes_only_if_absent(item_table):
    assert item_table.put(item("P", "S", {"owner": "first"}), expect_version=0)["version"] == 1

    with pytest.raises(ConditionFailed):
        item_table.put(item("P", "S", {"owner": "second"}), expect_version=0)

    got = item_table.get("P", "S")
    assert got["body"] == {"owner": "first"}
    assert got["version"] == 1


def test_expect_version_matching_writes_and_increments(item_table):
    item_table.put(item("P", "S", {"n": 1}))
    stored = item_table.put(item("P", "S", {"n": 2}), expect_version=1)
    assert stored["version"] == 2
    assert item_table.get("P", "S")["body"] == {"n": 2}


def test_expect_version_mismatch_raises_and_leaves_the_item(item_table):
    item_table.put(item("P", "S", {"n": 1}))
    item_table.put(item("P", "S", {"n": 2}), expect_version=1)

    # A writer that read version 1 lost the race.
    with pytest.raises(ConditionFailed) as err:
        item_table.put(item("P", "S", {"n": "stale"}), expect_version=1)
    assert err.value.status == 409

    with pytest.raises(ConditionFailed):
        item_table.put(item("P", "S", {"n": "future"}), expect_version=5)

    got = item_table.get("P", "S")
    assert got["body"] == {"n": 2}
    assert got["version"] == 2


def test_expect_positive_version_on_a_missing_item_raises(item_table):
    with pytest.raises(ConditionFailed):
        item_table.put(item("P", "S"), expect_version=1)
    assert item_table.get("P", "S") is None


def test_delete_removes_and_is_a_no_op_when_missing(item_table):
    item_table.put(item("P", "S"))
    item_table.put(item("P", "T"))
    item_table.delete("P", "S")
    assert item_table.get("P", "S") is None
    assert item_table.get("P", "T") is not None
    item_table.delete("P", "S")  # already gone: fine
    item_table.delete("nope", "nope")


def test_conditional_delete(item_table):
    item_table.put(item("P", "S"))
    item_table.put(item("P", "S"))  # version 2

    with pytest.raises(ConditionFailed):
        item_table.delete("P", "S", expect_version=1)
    assert item_table.get("P", "S")["version"] == 2

    item_table.delete("P", "S", expect_version=2)
    assert item_table.get("P", "S") is None


def test_delete_then_recreate_starts_again_at_version_one(item_table):
    item_table.put(item("P", "S"))
    item_table.put(item("P", "S"))
    item_table.delete("P", "S")
    assert item_table.put(item("P", "S"), expect_version=0)["version"] == 1


def test_query_returns_one_partition_in_sort_key_order(item_table):
    for sk in ["V#b", "A", "V#a", "V#ab", "W", "V#"]:
        item_table.put(item("ARCH#m", sk))
    item_table.put(item("ARCH#other", "V#a"))
    item_table.put(item("ARCH#m2", "V#a"))  # a pk that merely starts with the same text

    assert [i["sk"] for i in item_table.query("ARCH#m")] == ["A", "V#", "V#a", "V#ab", "V#b", "W"]
    assert all(i["pk"] == "ARCH#m" for i in item_table.query("ARCH#m"))


def test_query_with_sort_key_prefix(item_table):
    for sk in ["V#b", "A", "V#a", "V#ab", "W", "U~"]:
        item_table.put(item("P", sk))

    assert [i["sk"] for i in item_table.query("P", "V#")] == ["V#a", "V#ab", "V#b"]
    assert [i["sk"] for i in item_table.query("P", "V#a")] == ["V#a", "V#ab"]
    assert [i["sk"] for i in item_table.query("P", "A")] == ["A"]
    assert item_table.query("P", "X") == []
    assert item_table.query("nope") == []


def test_query_items_carry_keys_and_versions(item_table):
    item_table.put(item("P", "a", {"n": 1}, gsi1pk="G", gsi1sk="1"))
    item_table.put(item("P", "a", {"n": 2}, gsi1pk="G", gsi1sk="1"))
    (got,) = item_table.query("P")
    assert (got["pk"], got["sk"], got["version"], got["body"]) == ("P", "a", 2, {"n": 2})
    assert (got["gsi1pk"], got["gsi1sk"]) == ("G", "1")


def test_query_index_across_partitions_in_index_sort_key_order(item_table):
    item_table.put(item("ARCH#b", "A", gsi1pk="TASK#t", gsi1sk="ARCH#b"))
    item_table.put(item("ARCH#a", "V#a:2", gsi1pk="TASK#t", gsi1sk="V#a:2"))
    item_table.put(item("ARCH#a", "A", gsi1pk="TASK#t", gsi1sk="ARCH#a"))
    item_table.put(item("ARCH#a", "V#a:1", gsi1pk="TASK#t", gsi1sk="V#a:1"))
    item_table.put(item("ARCH#c", "A", gsi1pk="TASK#other", gsi1sk="ARCH#c"))
    item_table.put(item("ARCH#d", "A"))  # not in the index at all

    everything = item_table.query_index("TASK#t")
    assert [i["gsi1sk"] for i in everything] == ["ARCH#a", "ARCH#b", "V#a:1", "V#a:2"]
    assert [(i["pk"], i["sk"]) for i in everything] == [
        ("ARCH#a", "A"),
        ("ARCH#b", "A"),
        ("ARCH#a", "V#a:1"),
        ("ARCH#a", "V#a:2"),
    ]
    assert [i["pk"] for i in item_table.query_index("TASK#t", "ARCH#")] == ["ARCH#a", "ARCH#b"]
    assert [i["sk"] for i in item_table.query_index("TASK#t", "V#")] == ["V#a:1", "V#a:2"]
    assert item_table.query_index("TASK#none") == []


def test_rewriting_index_keys_moves_the_item_in_the_index(item_table):
    item_table.put(item("W", "1", gsi1pk="OLD", gsi1sk="x"))
    item_table.put(item("W", "1", gsi1pk="NEW", gsi1sk="x"))
    assert item_table.query_index("OLD") == []
    assert [i["pk"] for i in item_table.query_index("NEW")] == ["W"]


def test_expired_items_are_invisible_to_get_query_and_query_index(item_table, clock):
    item_table.put(item("P", "dies", gsi1pk="G", gsi1sk="dies", expires_at=clock() + 10))
    item_table.put(item("P", "lives", gsi1pk="G", gsi1sk="lives"))
    item_table.put(item("P", "later", gsi1pk="G", gsi1sk="later", expires_at=clock() + 100))

    clock.advance(9)
    assert item_table.get("P", "dies") is not None
    assert [i["sk"] for i in item_table.query("P")] == ["dies", "later", "lives"]

    clock.advance(2)  # 11 s after the write: past expires_at
    assert item_table.get("P", "dies") is None
    assert [i["sk"] for i in item_table.query("P")] == ["later", "lives"]
    assert [i["gsi1sk"] for i in item_table.query_index("G")] == ["later", "lives"]

    clock.advance(100)
    assert [i["sk"] for i in item_table.query("P")] == ["lives"]


def test_expires_at_round_trips(item_table, clock):
    at = clock() + 30.25
    item_table.put(item("P", "S", expires_at=at))
    assert item_table.get("P", "S")["expires_at"] == pytest.approx(at)


def test_refreshing_expires_at_keeps_an_item_alive(item_table, clock):
    item_table.put(item("P", "S", expires_at=clock() + 10))
    clock.advance(8)
    item_table.put(item("P", "S", expires_at=clock() + 10))
    clock.advance(8)  # 16 s after the first write, 8 s after the second
    assert item_table.get("P", "S") is not None


def test_an_expired_item_counts_as_absent_for_conditional_writes(item_table, clock):
    item_table.put(item("P", "S", {"n": 1}, expires_at=clock() + 5))
    clock.advance(6)
    stored = item_table.put(item("P", "S", {"n": 2}), expect_version=0)
    assert stored["version"] == 1
    assert item_table.get("P", "S")["body"] == {"n": 2}
