"""Test-suite wiring: each dependency's fixtures live in a plugin module of its own."""

import pytest

pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.redis_topologies",
    "tests.fixtures.rig",
    "tests.fixtures.kube",
    "tests.fixtures.livekit",
    "tests.fixtures.s3",
    "tests.fakes.plugin",
]

# Packages whose fixtures bring the installed product up and down (rig/cluster.py `up`/`down`, each
# bounded by its own subprocess timeout): there the suite's per-test timeout covers the test body
# only, so a slow teardown after the last test is not reported as that test's failure.
_CLUSTER_PACKAGES = ("tests/cluster/", "tests/e2e/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(_CLUSTER_PACKAGES) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(func_only=True))
