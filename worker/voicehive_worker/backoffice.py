"""Which PMS adapter a line gets: built from ``spec.pms`` and the credentials in the pod env.

WHY here and not in the agent: the agent only knows the :class:`PmsAdapter` seam. The operator
puts the line's PMS Secret into the worker pod as ``VOICEHIVE_PMS_ID``/``VOICEHIVE_PMS_SECRET``
(voicehive.contract); a line without ``spec.pms`` (or ``kind: builtin``) keeps the facts adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voicehive import contract
from voicehive.api.models import HotelLineSpec, PmsKind
from voicehive_worker.pms import FactsPms, PmsAdapter


def build_pms(spec: HotelLineSpec, env: Mapping[str, str], *, language: str | None = None, verify: Any = True) -> PmsAdapter:
    """The line's adapter; raises ValueError naming what is missing (the pod then exits 2)."""
    pms = spec.pms
    if pms.kind == PmsKind.BUILTIN:
        return FactsPms(spec.facts)
    ident, secret = env.get(contract.ENV_PMS_ID, ""), env.get(contract.ENV_PMS_SECRET, "")
    if not (ident and secret):
        raise ValueError(f"pms: {contract.ENV_PMS_ID} and {contract.ENV_PMS_SECRET} must be set for kind {pms.kind}")
    if pms.kind == PmsKind.MEWS:
        from voicehive_worker.pms_mews import MewsPms

        return MewsPms(
            pms, spec.facts, client_token=ident, access_token=secret, time_zone=spec.time_zone,
            language=language or spec.languages[0], verify=verify,
        )
    from voicehive_worker.pms_apaleo import ApaleoPms

    return ApaleoPms(pms, spec.facts, client_id=ident, client_secret=secret, verify=verify)
