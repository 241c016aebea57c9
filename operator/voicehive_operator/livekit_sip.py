"""A HotelLine's LiveKit SIP objects (inbound trunk + individual dispatch rule), via livekit-api.

WHY "find ours before create": the operator can die between LiveKit's create and the status
write that records the id. Every trunk and rule we make carries metadata naming its line
(``builders.livekit_metadata``), so a restarted operator, or one whose status was lost, adopts
what it made instead of creating a second trunk, and deletes duplicates if a race made some.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import aiohttp
from livekit import api as lk
from livekit.api.twirp_client import ServerError
from livekit.protocol import sip as lk_sip

from voicehive.api.models import HotelLineSpec
from voicehive_operator import builders

log = logging.getLogger(__name__)

_LONG_NUMBER = re.compile(r"\+?\d{6,}")


class SipError(Exception):
    """LiveKit refused or could not be reached; ``message`` is plain words and secret-free."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def scrub(text: str) -> str:
    """Mask anything that looks like a phone number in a message from LiveKit."""
    return _LONG_NUMBER.sub(lambda m: builders.mask_number(m.group(0)), text)[:300]


def explain(exc: BaseException, what: str, numbers: list[str]) -> SipError:
    """Turn a LiveKit error into a condition reason and a sentence a hotel's engineer understands."""
    if isinstance(exc, ServerError):
        text = exc.message or ""
        lowered = text.lower()
        if "conflict" in lowered or exc.code == "already_exists":
            shown = ", ".join(builders.mask_number(n) for n in numbers)
            return SipError(
                "NumberInUse",
                f"LiveKit rejected the {what}: a number of this line ({shown}) is already in use by "
                "another inbound trunk. Remove it there or from this HotelLine.",
            )
        if exc.code in {"unauthenticated", "permission_denied"} or exc.status in {401, 403}:
            return SipError(
                "LiveKitAuthFailed",
                "LiveKit refused the operator's API key (check LIVEKIT_API_KEY/LIVEKIT_API_SECRET and the "
                "key's SIP admin grant).",
            )
        if exc.code == "invalid_argument" or exc.status == 400:
            return SipError("LiveKitRejected", f"LiveKit rejected the {what}: {scrub(text)}")
        return SipError("LiveKitError", f"LiveKit failed on the {what} ({exc.code}): {scrub(text)}")
    if isinstance(exc, (aiohttp.ClientError, TimeoutError, OSError)):
        return SipError("LiveKitUnreachable", f"LiveKit could not be reached for the {what}; will retry.")
    return SipError("LiveKitError", f"Unexpected error on the {what}: {type(exc).__name__}.")


@dataclass(frozen=True)
class SipIds:
    trunk_id: str
    dispatch_rule_id: str


class LiveKitSip:
    """Idempotent ensure/delete of one line's trunk and dispatch rule."""

    def __init__(self, url: str, api_key: str, api_secret: str, timeout_s: float = 10.0) -> None:
        self._url = url
        self._key = api_key
        self._secret = api_secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._api: lk.LiveKitAPI | None = None

    @property
    def api(self) -> lk.LiveKitAPI:
        if self._api is None:
            self._api = lk.LiveKitAPI(self._url, self._key, self._secret, timeout=self._timeout, failover=False)
        return self._api

    async def close(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None

    # ---------------------------------------------------------------- discovery

    async def _our_trunks(self, line: str, known_id: str | None) -> list[lk_sip.SIPInboundTrunkInfo]:
        if known_id:
            resp = await self.api.sip.list_inbound_trunk(lk_sip.ListSIPInboundTrunkRequest(trunk_ids=[known_id]))
            found = [t for t in resp.items if t.sip_trunk_id == known_id and builders.line_of_metadata(t.metadata) == line]
            if found:
                return found
        resp = await self.api.sip.list_inbound_trunk(lk_sip.ListSIPInboundTrunkRequest())
        return [t for t in resp.items if builders.line_of_metadata(t.metadata) == line]

    async def _our_rules(self, line: str) -> list[lk_sip.SIPDispatchRuleInfo]:
        resp = await self.api.sip.list_dispatch_rule(lk_sip.ListSIPDispatchRuleRequest())
        return [r for r in resp.items if builders.line_of_metadata(r.metadata) == line]

    @staticmethod
    def _pick(items: list[str], preferred: str | None) -> str:
        return preferred if preferred in items else sorted(items)[0]

    # ---------------------------------------------------------------- ensure / delete

    async def ensure(
        self,
        namespace: str,
        name: str,
        spec: HotelLineSpec,
        auth: tuple[str, str] | None,
        known: SipIds | None,
        *,
        force_update: bool = False,
    ) -> tuple[SipIds, list[str]]:
        """Make LiveKit match the spec; returns the ids and what changed (for Events).

        ``force_update`` rewrites the trunk even when it looks equal: LiveKit may not return the
        digest password, so a changed spec or Secret is pushed unconditionally.
        """
        line = f"{namespace}/{name}"
        changes: list[str] = []
        desired = builders.inbound_trunk(namespace, name, spec, auth)
        numbers = list(spec.phone_numbers)
        try:
            trunks = await self._our_trunks(line, known.trunk_id if known else None)
        except Exception as exc:
            raise explain(exc, "trunk lookup", numbers) from None
        try:
            if trunks:
                trunk_id = self._pick([t.sip_trunk_id for t in trunks], known.trunk_id if known else None)
                current = next(t for t in trunks if t.sip_trunk_id == trunk_id)
                if force_update or _trunk_differs(current, desired):
                    await self.api.sip.update_inbound_trunk(trunk_id, desired)
                    changes.append("updated the SIP trunk")
                for extra in trunks:
                    if extra.sip_trunk_id != trunk_id:
                        await self.api.sip.delete_trunk(lk_sip.DeleteSIPTrunkRequest(sip_trunk_id=extra.sip_trunk_id))
                        changes.append("removed a duplicate SIP trunk")
            else:
                created = await self.api.sip.create_inbound_trunk(lk_sip.CreateSIPInboundTrunkRequest(trunk=desired))
                trunk_id = created.sip_trunk_id
                changes.append("created the SIP trunk" if known is None else "recreated the missing SIP trunk")
        except SipError:
            raise
        except Exception as exc:
            raise explain(exc, "trunk", numbers) from None

        rule = builders.dispatch_rule(namespace, name, trunk_id)
        try:
            rules = await self._our_rules(line)
            if rules:
                rule_id = self._pick(
                    [r.sip_dispatch_rule_id for r in rules], known.dispatch_rule_id if known else None
                )
                current_rule = next(r for r in rules if r.sip_dispatch_rule_id == rule_id)
                if _rule_differs(current_rule, rule):
                    await self.api.sip.update_dispatch_rule(rule_id, rule)
                    changes.append("updated the dispatch rule")
                for extra_rule in rules:
                    if extra_rule.sip_dispatch_rule_id != rule_id:
                        await self.api.sip.delete_dispatch_rule(
                            lk_sip.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=extra_rule.sip_dispatch_rule_id)
                        )
                        changes.append("removed a duplicate dispatch rule")
            else:
                made = await self.api.sip.create_dispatch_rule(lk_sip.CreateSIPDispatchRuleRequest(dispatch_rule=rule))
                rule_id = made.sip_dispatch_rule_id
                changes.append("created the dispatch rule")
        except Exception as exc:
            raise explain(exc, "dispatch rule", numbers) from None
        return SipIds(trunk_id, rule_id), changes

    async def delete(self, namespace: str, name: str) -> int:
        """Delete every trunk and rule of the line (ours by metadata); returns how many."""
        line = f"{namespace}/{name}"
        removed = 0
        try:
            for rule in await self._our_rules(line):
                await self._ignore_missing(
                    self.api.sip.delete_dispatch_rule(
                        lk_sip.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule.sip_dispatch_rule_id)
                    )
                )
                removed += 1
            for trunk in await self._our_trunks(line, None):
                await self._ignore_missing(
                    self.api.sip.delete_trunk(lk_sip.DeleteSIPTrunkRequest(sip_trunk_id=trunk.sip_trunk_id))
                )
                removed += 1
        except SipError:
            raise
        except Exception as exc:
            raise explain(exc, "trunk deletion", []) from None
        return removed

    @staticmethod
    async def _ignore_missing(call: object) -> None:
        try:
            await call  # type: ignore[misc]
        except ServerError as exc:
            if exc.code != "not_found" and exc.status != 404:
                raise


def _trunk_differs(current: lk_sip.SIPInboundTrunkInfo, desired: lk_sip.SIPInboundTrunkInfo) -> bool:
    return (
        sorted(current.numbers) != sorted(desired.numbers)
        or sorted(current.allowed_addresses) != sorted(desired.allowed_addresses)
        or current.auth_username != desired.auth_username
        or bool(current.auth_password and current.auth_password != desired.auth_password)
        or current.media.encryption != desired.media.encryption
        or current.name != desired.name
        or current.metadata != desired.metadata
        or current.max_call_duration.seconds != desired.max_call_duration.seconds
    )


def _rule_differs(current: lk_sip.SIPDispatchRuleInfo, desired: lk_sip.SIPDispatchRuleInfo) -> bool:
    return (
        list(current.trunk_ids) != list(desired.trunk_ids)
        or current.rule.dispatch_rule_individual.room_prefix != desired.rule.dispatch_rule_individual.room_prefix
        or dict(current.attributes) != dict(desired.attributes)
        or current.hide_phone_number != desired.hide_phone_number
        or current.metadata != desired.metadata
        or current.name != desired.name
    )
