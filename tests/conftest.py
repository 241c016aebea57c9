"""Test-suite wiring: each dependency's fixtures live in a plugin module of its own."""

pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.redis_topologies",
    "tests.fixtures.rig",
    "tests.fixtures.kube",
    "tests.fixtures.livekit",
    "tests.fixtures.s3",
    "tests.fakes.plugin",
]
