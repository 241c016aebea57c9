"""HA: two operators with Kopf peering; the standby takes over when the active one dies."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.fakes.livekit_twirp import LiveKitFake
from tests.fixtures.kube import KubeAPI
from tests.operator.conftest import Providers, condition
from tests.operator.helpers import wait_for
from voicehive.contract import HOTELLINES
from voicehive_operator.kube import Kube


async def test_standby_replica_takes_over_through_kopf_peering(
    kube: KubeAPI, start_operator: Any, hotelline: Any, kube_client: Kube, namespace: str,
    livekit_fake: LiveKitFake, providers: Providers, line_secret: dict[str, str],
) -> None:
    # Kopf's peering CRDs ship in crds/: both KMock and the rig's apiserver got them from there.
    peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "voicehive"}}
    await asyncio.to_thread(kube_client.custom.create_namespaced_custom_object, "kopf.dev", "v1", namespace,
                            "kopfpeerings", peering)
    active = await start_operator(peering="voicehive", priority=100, check_providers=False)
    await start_operator(peering="voicehive", priority=10, check_providers=False)

    async def peers() -> dict[str, Any]:
        obj = await asyncio.to_thread(kube_client.custom.get_namespaced_custom_object, "kopf.dev", "v1",
                                      namespace, "kopfpeerings", "voicehive")
        return dict(obj.get("status") or {})

    both = await wait_for(peers, lambda st: len(st) == 2, what="two peers announced")
    assert sorted(p.get("priority") for p in both.values()) == [10, 100]

    await hotelline("ha", providers.line_spec())
    await wait_for(lambda: kube_client.get_custom(namespace, HOTELLINES, "ha"),
                   lambda o: condition(o, "SipTrunkReady").get("status") == "True", what="reconciled")
    await active.kill()  # no goodbye: its lease just stops being renewed

    new_spec = providers.line_spec(phoneNumbers=["+493012345678"])
    await kube_client.patch_custom(namespace, HOTELLINES, "ha", {"spec": new_spec})
    await wait_for(lambda: asyncio.sleep(0, livekit_fake.trunks),
                   lambda t: [list(x.numbers) for x in t.values()] == [["+493012345678"]], timeout=60,
                   what="the standby applied the update")
    await wait_for(lambda: kube_client.get_custom(namespace, HOTELLINES, "ha"),
                   lambda o: o is not None and o["status"].get("observedGeneration") == o["metadata"]["generation"],
                   what="status written by the standby")
    assert len(livekit_fake.trunks) == 1 and len(livekit_fake.dispatch_rules) == 1
