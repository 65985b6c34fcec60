"""A task belongs to the tenant that created it. A query by task uses the caller's own variants
when it has any in the task, else the ones the task's owner shared, never a model a third tenant
shared into the task (``selection._target``): neither a latecomer nor whoever registered first can
answer another tenant's task queries with a "better" model."""

from __future__ import annotations

import pytest
from fakes import HARDWARE, make_profile, make_variant, make_worker

from infaas.core.domain import Objective, Query, ReplicaLoad
from infaas.core.errors import NoFeasibleVariant, NotFound
from infaas.core.selection import Catalogue, Cluster, candidates, select

P = make_profile({1: (1.0, 1.0)}, load_ms=5)
OWNED = make_variant("owner-model", accuracy=0.90, profile=P, tenant="owner", visibility="shared")
HIJACK = make_variant("hijack", accuracy=1.00, profile=P, tenant="mallory", visibility="shared")
GUEST = make_variant("guest-model", accuracy=0.80, profile=P, tenant="guest")


def decide(tenant: str, owners: dict | None, **target):
    catalogue = Catalogue.build([OWNED, HIJACK, GUEST], HARDWARE, owners)
    w = make_worker("w1", replicas=[ReplicaLoad(v.id) for v in (OWNED, HIJACK, GUEST)])
    return select(Query(1, Objective(min_accuracy=0.85), tenant=tenant, **target), catalogue,
                  Cluster.build([w], HARDWARE, catalogue=catalogue))


@pytest.mark.parametrize("tenant", ["owner", "consumer"])
def test_a_task_query_never_reaches_a_model_shared_into_the_task_by_a_third_tenant(tenant):
    owners = {"classification/digits": "owner"}
    assert decide(tenant, owners, task="classification/digits").variant == OWNED.id  # not the "perfect" hijack
    catalogue = Catalogue.build([OWNED, HIJACK, GUEST], HARDWARE, owners)
    seen = {v.architecture for v in candidates(Query(1, tenant=tenant, task="classification/digits"), catalogue)}
    assert seen == {"owner-model"}


@pytest.mark.parametrize("owner", ["owner", "mallory"])
def test_a_tenant_with_its_own_model_in_the_task_is_answered_by_its_own_only(owner):
    """Whoever claimed the task first (``mallory`` registering into it before anyone) answers
    nothing for a tenant that has its own model there, however good its shared one claims to be."""
    owners = {"classification/digits": owner}
    catalogue = Catalogue.build([OWNED, HIJACK, GUEST], HARDWARE, owners)
    seen = {v.architecture for v in candidates(Query(1, tenant="guest", task="classification/digits"), catalogue)}
    assert seen == {"guest-model"}
    with pytest.raises(NoFeasibleVariant):  # its own model is under the 0.85 floor: refused, not answered by another's
        decide("guest", owners, task="classification/digits")
    assert decide("guest", owners, architecture="owner-model").variant == OWNED.id  # named: its choice


def test_naming_the_shared_model_is_a_choice_and_allowed():
    assert decide("owner", {"classification/digits": "owner"}, architecture="hijack").variant == HIJACK.id


def test_the_intruder_uses_its_own_model_in_the_task_for_itself():
    assert decide("mallory", {"classification/digits": "owner"}, task="classification/digits").variant == HIJACK.id


def test_without_owners_every_shared_model_counts_for_a_tenant_with_none_of_its_own():
    assert decide("consumer", None, task="classification/digits").variant == HIJACK.id
    assert decide("owner", None, task="classification/digits").variant == OWNED.id


def test_a_task_with_only_foreign_private_models_is_not_found():
    catalogue = Catalogue.build([GUEST], HARDWARE, {"classification/digits": "guest"})
    with pytest.raises(NotFound):
        candidates(Query(1, tenant="owner", task="classification/digits"), catalogue)
