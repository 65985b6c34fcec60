"""A tenant holds at most ``INFAAS_MAX_MODELS_PER_TENANT`` architectures: every model costs builds
on the shared workers and room in every tenant's listings. Real parts: the local adapters
(SQLite, the model folder, the job queue) and the control plane's own registration."""

from __future__ import annotations

import pytest
from fakes import memory_growing_model

from infaas.app.control import ControlPlane
from infaas.core.errors import Forbidden
from infaas.core.settings import Settings
from infaas.wiring.local import LocalAdapters


def test_a_tenant_past_its_model_quota_is_refused_and_others_are_not(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"), max_models_per_tenant=2)
    adapters = LocalAdapters(settings)
    control = ControlPlane(adapters.store, adapters.models, adapters.queue, settings)
    path = tmp_path / "m.onnx"
    memory_growing_model(path)
    data = path.read_bytes()
    for name in ("a-one", "a-two"):
        control.register(name=name, task="t/quota", accuracy=0.5, data=data, tenant="a")
    with pytest.raises(Forbidden) as err:
        control.register(name="a-three", task="t/quota", accuracy=0.5, data=data, tenant="a")
    assert err.value.field == "name" and "INFAAS_MAX_MODELS_PER_TENANT" in err.value.message
    # the same registration again is not a new model; another tenant has its own quota
    assert control.register(name="a-two", task="t/quota", accuracy=0.5, data=data, tenant="a")[1] is False
    assert control.register(name="b-one", task="t/quota-b", accuracy=0.5, data=data, tenant="b")[1] is True
    control.delete("a-one", "a")
    assert control.register(name="a-three", task="t/quota", accuracy=0.5, data=data, tenant="a")[1] is True
