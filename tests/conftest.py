"""Fixtures shared by every test suite.

Having this file here also puts ``tests/`` on ``sys.path`` so that suites can
``from fakes import ...``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from fakes import FakeClock

_UNIT_DIR = Path(__file__).parent / "unit"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> str:
    return str(tmp_path / "metadata.db")


@pytest.fixture(autouse=True)
def _no_network_in_unit_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/unit must not touch the network: any non-Unix-socket connect fails the test."""
    if _UNIT_DIR not in Path(str(request.node.path)).parents:
        return
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def _guard(real):
        def connect(self, address):
            if self.family == getattr(socket, "AF_UNIX", object()):
                return real(self, address)
            pytest.fail(f"unit tests must not use the network (tried to connect to {address!r})", pytrace=True)

        return connect

    monkeypatch.setattr(socket.socket, "connect", _guard(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guard(real_connect_ex))


# tests/load generates load at rates derived from the machine's own profiles and asserts what the
# autoscaler did in response: on a busy machine the client cannot reach those rates, so these run
# under `make bench` (INFAAS_LOAD_TESTS=1), never in the default suite.
collect_ignore = [] if os.environ.get("INFAAS_LOAD_TESTS") else ["load"]


@pytest.fixture
def proteus_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small data set in the Proteus layout (``tests/proteus_data.py``), made the simulator's default."""
    import proteus_data

    from infaas.sim import data

    root = proteus_data.write(tmp_path_factory.mktemp("proteus"))
    monkeypatch.setattr(data, "DEFAULT_DATA_DIR", root)
    return root


# `make test` runs the suite in several processes (pytest-xdist, `--dist loadgroup`). Each file is
# one group, so its module fixtures are built once; the suites that build the Lambda bundles and
# layers into the repository's shared build folders (tests/infrastructure, tests/integration) are
# one group together, so that two processes never write those folders at once.
# The groups go to xdist's scheduler from each test's path, not as xdist_group marks: xdist's worker
# copies those marks into the test ids in a collection hook that runs before this file's (hooks run
# last-registered first), and under pytest 9.2 its change to the id is lost (ids are structured now);
# the marks were ignored, each test scheduled on its own and a module's tests split between processes.
_SHARED_BUILD = ("infrastructure", "integration")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    root = Path(__file__).parent

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = config.rootpath / nodeid.split("::", 1)[0]
            if root not in path.parents:
                return str(path)
            rel = path.relative_to(root)
            return "shared-build" if rel.parts[0] in _SHARED_BUILD else rel.as_posix()

    return ByGroup(config, log)
