"""Hostile HotelLine author: an unlisted image, a foreign endpoint, a Secret from another namespace.

Each is refused with a plain-words condition, no worker Pod is created, and loopback listeners
standing in for the attacker's hosts prove the operator never opened a connection to them (so no
API key of the namespace left through the provider checks).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from kubernetes.client.exceptions import ApiException

from tests.fixtures.kube import KubeAPI
from tests.operator.conftest import Providers, condition
from tests.operator.helpers import wait_for
from voicehive import contract
from voicehive.contract import HOTELLINES
from voicehive_operator.kube import Kube

WORKERS = {contract.LABEL_COMPONENT: contract.COMPONENT_WORKER}


class Listener:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts (and says nothing)."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


@pytest_asyncio.fixture
async def listeners() -> AsyncIterator[dict[str, tuple[Listener, int]]]:
    found: dict[str, tuple[Listener, int]] = {}
    for name in ("llm", "tts", "asr", "allowed"):
        listener = Listener()
        found[name] = (listener, await listener.start())
    yield found
    for listener, _ in found.values():
        assert listener.server is not None
        listener.server.close()


async def _line(kube: Kube, ns: str, name: str) -> dict[str, Any] | None:
    return await kube.get_custom(ns, HOTELLINES, name)


def _numbers(i: int) -> list[str]:
    return [f"+49301234{i:04d}"]


async def test_hostile_author_is_refused_without_any_outbound_request(
    kube: KubeAPI, start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str, providers: Providers,
    line_secret: dict[str, str], listeners: dict[str, tuple[Listener, int]],
) -> None:
    await start_operator()
    good = providers.line_spec()
    # "localhost" reaches the same loopback listeners, but is not on the operator's allow-lists.
    hostile = {
        "image": providers.line_spec(phoneNumbers=_numbers(1),
                                     workers={**good["workers"], "image": "evil.example/miner:latest"}),
        "llm": providers.line_spec(phoneNumbers=_numbers(2),
                                   llm={**good["llm"], "endpoint": f"https://localhost:{listeners['llm'][1]}"}),
        "tts": providers.line_spec(phoneNumbers=_numbers(3),
                                   tts={**good["tts"], "endpoint": f"https://localhost:{listeners['tts'][1]}"}),
        "asr": providers.line_spec(phoneNumbers=_numbers(4),
                                   asr={**good["asr"], "endpoint": f"localhost:{listeners['asr'][1]}"}),
    }
    for name, body in hostile.items():
        await hotelline(f"hostile-{name}", body)
    expected = {"image": ("ImageNotAllowed", "workers.image evil.example/miner:latest is not one of"),
                "llm": ("EndpointNotAllowed", "llm.endpoint host localhost is not"),
                "tts": ("EndpointNotAllowed", "tts.endpoint host localhost is not"),
                "asr": ("EndpointNotAllowed", "asr.endpoint host localhost is not")}
    for name, (reason, words) in expected.items():
        refused = await wait_for(lambda n=name: _line(kube_client, namespace, f"hostile-{n}"),  # type: ignore[misc]
                                 lambda o, r=reason: condition(o, "Ready").get("reason") == r, what=f"{name} refused")
        assert words in condition(refused, "Ready")["message"]
        assert condition(refused, "TtsReady")["status"] == "False"
    # A well-behaved line in the same namespace, created after them, gets its full provider check:
    # the operator has passed over every hostile line at least once by then.
    await hotelline("control", good)
    await wait_for(lambda: _line(kube_client, namespace, "control"),
                   lambda o: condition(o, "TtsReady").get("status") == "True", what="control line checked")
    # Positive control: the same kind of listener on an allowed host (127.0.0.1) is reached.
    allowed, port = listeners["allowed"]
    await hotelline("allowed-host", providers.line_spec(phoneNumbers=_numbers(7),
                                                        tts={**good["tts"], "endpoint": f"https://127.0.0.1:{port}"}))
    await wait_for(lambda: asyncio.sleep(0, allowed.connections), lambda n: n > 0, what="allowed host contacted")
    for name in hostile:
        assert await kube_client.list_pods(namespace, {**WORKERS, contract.LABEL_LINE: f"hostile-{name}"}) == []
    assert {name: listeners[name][0].connections for name in hostile if name != "image"} == {
        "llm": 0, "tts": 0, "asr": 0}


async def test_secret_from_another_namespace_is_refused(
    kube: KubeAPI, start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str, providers: Providers,
    line_secret: dict[str, str],
) -> None:
    await start_operator()
    good = providers.line_spec()
    foreign = {**good["tts"], "apiKeySecretRef": {"name": "eleven", "key": "api-key", "namespace": "kube-system"}}
    slashed = {**good["llm"], "apiKeySecretRef": {"name": "kube-system/eleven", "key": "api-key"}}
    for name, body in (("foreign", providers.line_spec(phoneNumbers=_numbers(5), tts=foreign)),
                       ("slashed", providers.line_spec(phoneNumbers=_numbers(6), llm=slashed))):
        try:
            await hotelline(name, body)
        except ApiException as exc:  # a real apiserver refuses it by the CRD schema already
            assert exc.status == 422 and "apiKeySecretRef" in str(exc.body)
            continue
        stored = await _line(kube_client, namespace, name)
        if name == "foreign" and "namespace" not in stored["spec"]["tts"]["apiKeySecretRef"]:  # type: ignore[index]
            continue  # a real apiserver prunes the unknown field: the ref can only name this namespace
        refused = await wait_for(lambda n=name: _line(kube_client, namespace, n),  # type: ignore[misc]
                                 lambda o: condition(o, "Ready").get("reason") == "SpecInvalid", what=f"{name} refused")
        assert "apiKeySecretRef" in condition(refused, "Ready")["message"]
        assert await kube_client.list_pods(namespace, {**WORKERS, contract.LABEL_LINE: name}) == []
