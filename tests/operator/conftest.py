"""Operator test rig: Kopf in the test's loop against the kube fixture, LiveKit via the Twirp fake,
providers via their fakes (Azure OpenAI and ElevenLabs behind a TLS terminator with a test CA)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import pytest
import pytest_asyncio

from tests.fakes.azure_openai import AzureOpenAIFake
from tests.fakes.elevenlabs import ElevenLabsFake
from tests.fakes.livekit_twirp import LiveKitFake
from tests.fakes.riva import RivaFake
from tests.fakes.tls import make_tls_files
from tests.fixtures.kube import KubeAPI
from tests.operator.helpers import spec
from tests.operator.tls import TlsProxy
from voicehive import contract
from voicehive.contract import HOTELLINES
from voicehive_operator import builders
from voicehive_operator.handlers import build_registry
from voicehive_operator.kube import Kube
from voicehive_operator.main import build_runtime, kopf_settings
from voicehive_operator.runtime import Runtime
from voicehive_operator.settings import OperatorSettings

SECRET = "line-keys"


@dataclass
class Providers:
    riva: RivaFake
    azure: AzureOpenAIFake
    eleven: ElevenLabsFake
    azure_url: str
    eleven_url: str
    ca_file: str

    def line_spec(self, **overrides: Any) -> dict[str, Any]:
        """A valid spec whose providers are the fakes (Riva by endpoint: no managed Deployment)."""
        base = spec()
        base["asr"] = {**base["asr"], "endpoint": self.riva.address, "model": self.riva.models[0].name}
        base["asr"].pop("language", None)
        base["llm"] = {**base["llm"], "endpoint": self.azure_url, "deployment": self.azure.deployment}
        base["tts"] = {**base["tts"], "endpoint": self.eleven_url}
        base.update(overrides)
        return base


@pytest_asyncio.fixture
async def providers(
    tmp_path: Path, riva_fake: RivaFake, azure_fake: AzureOpenAIFake, elevenlabs_fake: ElevenLabsFake
) -> AsyncIterator[Providers]:
    tls = make_tls_files(tmp_path)
    cert, key = tls.cert_file, tls.key_file
    async with TlsProxy(azure_fake.port, cert, key) as az, TlsProxy(elevenlabs_fake.port, cert, key) as el:
        yield Providers(riva_fake, azure_fake, elevenlabs_fake, az.url, el.url, str(tls.ca_file))


@pytest.fixture
def kube_client(kube: KubeAPI) -> Kube:
    return Kube(kube.api_client())


@pytest_asyncio.fixture
async def line_secret(kube_client: Kube, namespace: str, providers: Providers) -> dict[str, str]:
    values = {
        "azure-openai-api-key": providers.azure.api_key,
        "elevenlabs-api-key": providers.eleven.api_key,
        "sip-username": "carrier-" + secrets.token_hex(3),
        "sip-password": secrets.token_urlsafe(18),
    }
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }
    await asyncio.to_thread(kube_client.core.create_namespaced_secret, namespace, body)
    # The worker ServiceAccount must exist before a real apiserver admits worker pods.
    sa = builders.worker_rbac(namespace, OperatorSettings())[0]
    with contextlib.suppress(Exception):
        await asyncio.to_thread(kube_client.core.create_namespaced_service_account, namespace, sa)
    return values


class _EveryTask(frozenset):  # type: ignore[type-arg]
    """Kopf cancels every task it did not see at start-up when it stops; in a test loop those are
    pytest's own fixture finalizers, so the operator must leave all foreign tasks alone."""

    def __contains__(self, item: object) -> bool:
        return True


@dataclass
class OperatorHandle:
    """One operator instance running in the test's loop; ``stop`` is graceful, ``kill`` is not."""

    kube: KubeAPI
    namespace: str
    settings: OperatorSettings
    peering: str | None = None
    priority: int = 0
    runtime: Runtime | None = None
    _runner: asyncio.Task[Any] | None = None
    _stop: asyncio.Future[None] | None = None
    registries: list[Any] = field(default_factory=list)

    async def start(self) -> OperatorHandle:
        registry = build_registry(self.settings)
        kube = self.kube

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kube.kopf_connection()  # type: ignore[no-any-return]

        self.runtime = build_runtime(self.settings, Kube(kube.api_client()))
        self.runtime.namespaces = (self.namespace,)
        memo = kopf.Memo()
        memo.runtime = self.runtime
        ksettings = kopf_settings()
        ksettings.watching.server_timeout = 10
        ksettings.watching.client_timeout = 15
        ksettings.peering.lifetime = 3  # a dead peer's lease runs out in seconds, not a minute
        loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        ready = asyncio.Event()
        tasks = await kopf.spawn_tasks(
            registry=registry, settings=ksettings, namespaces=[self.namespace], standalone=self.peering is None,
            peering_name=self.peering, priority=self.priority, stop_flag=self._stop, ready_flag=ready, memo=memo,
        )
        self._runner = asyncio.create_task(kopf.run_tasks(tasks, ignored=_EveryTask()))
        await asyncio.wait_for(ready.wait(), timeout=30)
        return self

    async def stop(self) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
                await asyncio.wait_for(self._runner, timeout=30)
        await self._close_runtime()

    async def kill(self) -> None:
        """Crash: cancel everything at once, no graceful shutdown, nothing flushed."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(BaseException):
                await self._runner
        await self._close_runtime()

    async def _close_runtime(self) -> None:
        if self.runtime is not None:
            with contextlib.suppress(Exception):
                await self.runtime.close()
            self.runtime = None


@pytest_asyncio.fixture
async def start_operator(
    kube: KubeAPI, namespace: str, livekit_fake: LiveKitFake, providers: Providers
) -> AsyncIterator[Callable[..., Any]]:
    handles: list[OperatorHandle] = []

    async def start(peering: str | None = None, priority: int = 0, **overrides: Any) -> OperatorHandle:
        settings = OperatorSettings(
            livekit_url=livekit_fake.url,
            livekit_api_key=livekit_fake.api_key,
            livekit_api_secret=livekit_fake.api_secret,
            llm_allowed_hosts=("127.0.0.1",),
            tts_allowed_hosts=("127.0.0.1",),
            asr_allowed_hosts=("127.0.0.1",),
            provider_ca_file=providers.ca_file,
            provider_timeout_s=5.0,
            resync_interval_s=1.0,
            sweep_interval_s=0.5,
            streams_per_gpu=16,
        )
        for key, value in overrides.items():
            setattr(settings, key, value)
        handle = await OperatorHandle(kube, namespace, settings, peering, priority).start()
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        await handle.stop()


@pytest.fixture
def hotelline(kube_client: Kube, namespace: str) -> Callable[..., Any]:
    async def create(name: str, spec_body: dict[str, Any], annotations: dict[str, str] | None = None) -> Any:
        body = {
            "apiVersion": "voicehive.io/v1alpha1",
            "kind": "HotelLine",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
            "spec": spec_body,
        }
        return await kube_client.create_custom(namespace, HOTELLINES, body)

    return create


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


@pytest.fixture(autouse=True)
def _operator_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture everything Kopf and the operator log, so tests can scan it for personal data."""
    caplog.set_level(logging.DEBUG)
    for noisy in ("urllib3", "aiohttp.access", "aiohttp.server", "kmock", "hpack", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


__all__ = ["SECRET", "OperatorHandle", "Providers", "condition", "contract"]
