"""Test-suite wiring: each dependency's fixtures live in a plugin module of its own."""

pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.kube",
    "tests.fakes.plugin",
]
