"""Every entry point reads the environment through the readers of ``infaas.core.settings``:
a bad value raises ``SettingsError`` naming the variable and the value."""

from __future__ import annotations

import pytest

from infaas.adapters.aws.fleet import drain_watch_env
from infaas.core.settings import (
    Settings,
    SettingsError,
    env_float,
    env_int,
    env_json_object,
    env_str_required,
)
from infaas.wiring.aws import AwsResources, fleet_groups

AWS = {"INFAAS_TABLE": "t", "INFAAS_BUCKET": "b", "INFAAS_QUEUE_PREFIX": "p-"}


# --- the readers ---------------------------------------------------------------

def test_env_int_default_value_and_range():
    assert env_int({}, "INFAAS_X", 7, 0, 10) == 7
    assert env_int({"INFAAS_X": "  "}, "INFAAS_X", 7, 0, 10) == 7
    assert env_int({"INFAAS_X": "3"}, "INFAAS_X", 7, 0, 10) == 3
    with pytest.raises(SettingsError, match=r"INFAAS_X='3\.5': expected an integer"):
        env_int({"INFAAS_X": "3.5"}, "INFAAS_X", 7)
    with pytest.raises(SettingsError, match=r"INFAAS_X='11': must be between 0 and 10"):
        env_int({"INFAAS_X": "11"}, "INFAAS_X", 7, 0, 10)
    with pytest.raises(SettingsError, match=r"INFAAS_X='-1': must be >= 0"):
        env_int({"INFAAS_X": "-1"}, "INFAAS_X", 7, low=0)


def test_env_float_rejects_text_nan_and_out_of_range():
    assert env_float({"INFAAS_Y": "2.5"}, "INFAAS_Y", 1.0, low=0) == 2.5
    assert env_float({}, "INFAAS_Y", 1.0, low=0) == 1.0
    for bad in ("abc", "nan", "-0.1"):
        with pytest.raises(SettingsError, match=f"INFAAS_Y='{bad}'"):
            env_float({"INFAAS_Y": bad}, "INFAAS_Y", 1.0, low=0)


def test_env_str_required_and_json_object():
    assert env_str_required({"INFAAS_Z": " z "}, "INFAAS_Z") == "z"
    with pytest.raises(SettingsError, match="INFAAS_Z is not set"):
        env_str_required({"INFAAS_Z": ""}, "INFAAS_Z")
    assert env_json_object({}, "INFAAS_J") is None
    assert env_json_object({"INFAAS_J": '{"a": "b"}'}, "INFAAS_J") == {"a": "b"}
    for bad in ("{", "[1]", '{"a": 1}'):
        with pytest.raises(SettingsError, match="INFAAS_J=.*expected a JSON object"):
            env_json_object({"INFAAS_J": bad}, "INFAAS_J")
    with pytest.raises(SettingsError, match="INFAAS_J is not set"):
        env_json_object({}, "INFAAS_J", required=True)


# --- Settings ------------------------------------------------------------------

@pytest.mark.parametrize(("var", "raw"), [
    ("INFAAS_PORT", "http"),
    ("INFAAS_PORT", "-1"),
    ("INFAAS_WORKERS", "2.5"),
    ("INFAAS_HEARTBEAT_S", "soon"),
    ("INFAAS_TENANT_RPS", "-5"),
    ("INFAAS_SCALE_TARGET_UTILISATION", "1.5"),
    ("INFAAS_AUTOSCALE", "maybe"),
    ("INFAAS_SCALE_FILL_FLEET_MS", "fast"),
    ("INFAAS_OFFLINE_VISIBILITY_S", "0"),  # an item's lease beats every third of it: at least 1 s
    ("INFAAS_OFFLINE_VISIBILITY_S", "50000"),  # over SQS's 12 hours
    ("INFAAS_OFFLINE_ITEM_LIMIT_S", "0"),
])
def test_a_bad_settings_value_names_its_variable(var, raw):
    with pytest.raises(SettingsError, match=var):
        Settings.from_env({var: raw})


def test_settings_from_env_still_reads_good_values():
    s = Settings.from_env({"INFAAS_PORT": "9000", "INFAAS_HEARTBEAT_S": "0.25", "INFAAS_HOST": "0.0.0.0"})
    assert (s.port, s.heartbeat_s, s.host) == (9000, 0.25, "0.0.0.0")


def test_the_fixed_fleet_optimiser_is_a_setting():
    assert Settings.from_env({}).scaling_params().fill_fleet_ms is None  # off by default
    params = Settings.from_env({"INFAAS_SCALE_FILL_FLEET_MS": "300", "INFAAS_MIN_WORKERS": "cpu=2",
                                "INFAAS_MAX_WORKERS": "cpu=2"}).scaling_params()
    assert params.fill_fleet_ms == 300.0 and params.min_workers == params.max_workers == {"cpu": 2}


# --- AWS wiring ----------------------------------------------------------------

@pytest.mark.parametrize(("var", "raw"), [
    ("INFAAS_MAX_RECEIVES", "three"),
    ("INFAAS_MAX_RECEIVES", "0"),
    ("INFAAS_QUEUE_WAIT_S", "21"),
    ("INFAAS_QUEUE_WAIT_S", "1.5"),
    ("INFAAS_QUEUE_URLS", "not json"),
    ("INFAAS_QUEUE_URLS", '["https://sqs/q"]'),
    ("INFAAS_QUEUE_URLS", '{"build-cpu": 1}'),
])
def test_a_bad_aws_resource_value_names_its_variable(var, raw):
    with pytest.raises(SettingsError, match=var):
        AwsResources.from_env({**AWS, var: raw})


def test_aws_resources_reads_good_values():
    r = AwsResources.from_env({**AWS, "INFAAS_MAX_RECEIVES": "5", "INFAAS_QUEUE_WAIT_S": "10",
                               "INFAAS_QUEUE_URLS": '{"build-cpu": "https://sqs/q"}'})
    assert (r.table, r.bucket, r.max_receives, r.queue_wait_s) == ("t", "b", 5, 10)
    assert r.queue_urls == {"build-cpu": "https://sqs/q"}


@pytest.mark.parametrize("var", ["INFAAS_TABLE", "INFAAS_BUCKET"])
def test_a_missing_aws_resource_names_its_variable(var):
    env = {k: v for k, v in AWS.items() if k != var}
    with pytest.raises(SettingsError, match=var):
        AwsResources.from_env(env)


# --- the autoscaler Lambda's groups ---------------------------------------------

@pytest.mark.parametrize("raw", [None, "", "cpu=infaas-cpu", "{}", '["infaas-cpu"]', '{"cpu": 3}'])
def test_bad_fleet_groups_name_the_variable(raw):
    env = {} if raw is None else {"INFAAS_FLEET_GROUPS": raw}
    with pytest.raises(SettingsError, match="INFAAS_FLEET_GROUPS"):
        fleet_groups(env)


def test_fleet_groups_reads_the_json_object():
    assert fleet_groups({"INFAAS_FLEET_GROUPS": '{"cpu": "infaas-cpu", "gpu": "infaas-gpu"}'}) == {
        "cpu": "infaas-cpu", "gpu": "infaas-gpu"}


# --- the worker machine's drain-watch ---------------------------------------------

@pytest.mark.parametrize("raw", ["five", "-1", "nan"])
def test_a_bad_drain_time_names_its_variable(raw):
    with pytest.raises(SettingsError, match="INFAAS_DRAIN_S"):
        drain_watch_env({"INFAAS_DRAIN_S": raw})


def test_drain_watch_defaults():
    assert drain_watch_env({}) == {"group": None, "drain_s": 5.0}
    assert drain_watch_env({"INFAAS_GROUP": "g", "INFAAS_DRAIN_S": "12.5"}) == {"group": "g", "drain_s": 12.5}


def test_drain_watch_main_names_a_bad_drain_time(monkeypatch):
    from infaas.adapters.aws import fleet

    monkeypatch.setenv("INFAAS_DRAIN_S", "5s")
    monkeypatch.setattr(fleet, "imds_get", lambda path: pytest.fail("read instance metadata before validating"))
    with pytest.raises(SettingsError, match=r"INFAAS_DRAIN_S='5s'"):
        fleet.main(["drain-watch", "--group", "g"])
