"""A loopback LiveKit control plane: Twirp over HTTP for SIP, agent dispatch and rooms.

Speaks what ``livekit.api.LiveKitAPI`` sends: ``POST /twirp/livekit.<Service>/<Method>``
with a protobuf (``application/protobuf``) or JSON (``application/json``) body and a
bearer JWT (HS256 with the API secret). The token's grants are checked as livekit-server
does (SIP admin / SIP call, roomAdmin for the named room, roomCreate, roomList); answers
follow livekit-server 1.13.5 as probed on the rig (a bad token: plain-text 401; missing
grants: Twirp ``unauthenticated`` "permissions denied").

Semantics mimic livekit-server: ids ``ST_``/``SDR_``/``AD_``/``RM_``/``PA_``/``SCL_``
plus 12 random characters; inbound trunks that would share a number are refused with
livekit's own ``invalid_argument`` message ("Conflicting inbound SIP Trunks: "<new>" and
"ST_..." ..."), as are dispatch rules with the same trunk+numbers+PIN; its error texts,
implicit dispatch for unnamed agents and quirks (docs/fakes.md lists them; the differential
test tests/test_fakes_livekit_vs_real.py checks them against the real server). Faults:
transient errors (default ``unavailable``/503) and a fixed delay.

Beyond the API, the fake can play the SIP side of a call: :meth:`LiveKitFake.simulate_inbound_call`
matches the configured trunks and dispatch rules like livekit-sip (room name, SIP
participant with ``sip.*`` attributes, agent dispatches from the rule's room config) and
sends signed webhooks (``room_started``, ``participant_joined``, ``participant_left``,
``room_finished``) to ``webhook_urls``, signed exactly as livekit-server signs them, so
``livekit.api.WebhookReceiver`` accepts them.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import re
import secrets
import ssl
import string
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from typing import Any

import aiohttp
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit import api as lkapi
from livekit.protocol import agent_dispatch as pb_dispatch
from livekit.protocol import models as pb_models
from livekit.protocol import room as pb_room
from livekit.protocol import sip as pb_sip
from livekit.protocol import webhook as pb_webhook

from tests.fakes._http import AiohttpFake

TWIRP_STATUS = {
    "canceled": 408,
    "unknown": 500,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
}

# Participant attribute names livekit-sip sets (github.com/livekit/protocol livekit/attrs.go).
ATTR_SIP_CALL_ID = "sip.callID"
ATTR_SIP_TRUNK_ID = "sip.trunkID"
ATTR_SIP_RULE_ID = "sip.ruleID"
ATTR_SIP_TRUNK_NUMBER = "sip.trunkPhoneNumber"
ATTR_SIP_PHONE_NUMBER = "sip.phoneNumber"
ATTR_SIP_CALL_STATUS = "sip.callStatus"
ATTR_SIP_HOSTNAME = "sip.hostname"

_ALPHABET = string.ascii_letters + string.digits


def new_guid(prefix: str) -> str:
    """livekit's id shape: a prefix and 12 random alphanumerics."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(12))


class TwirpError(Exception):
    def __init__(self, code: str, msg: str, meta: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.meta = meta or {}

    def response(self) -> web.Response:
        body: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.meta:
            body["meta"] = self.meta
        return web.json_response(body, status=TWIRP_STATUS.get(self.code, 500))


class _InvalidToken(Exception):
    """livekit-server's auth middleware answers these with a plain-text 401."""


class NoDispatchMatched(Exception):
    """A simulated call that livekit-sip would reject (message as livekit's ErrNoDispatchMatched)."""


# ---------------------------------------------------------------------------------------
# livekit's SIP matching rules (github.com/livekit/protocol sip/sip.go), re-expressed
# ---------------------------------------------------------------------------------------


_NUMBER_FORMATTING = re.compile(r"[\s().\-]")


def normalize_number(num: str) -> str:
    """Like livekit.NormalizeNumber: drop formatting characters, ensure a leading '+'."""
    num = _NUMBER_FORMATTING.sub("", num)
    if not num:
        return ""
    return num if num.startswith("+") else "+" + num


def _print_id(s: str) -> str:
    return s or "<new>"


def _print_numbers(numbers: Sequence[str]) -> str:
    if not numbers:
        return "<any>"
    return "[" + " ".join(f'"{n}"' for n in numbers) + "]"


def validate_trunks(trunks: Sequence[pb_sip.SIPInboundTrunkInfo]) -> None:
    """Raises livekit's invalid_argument when two inbound trunks would take the same calls."""
    by_number: dict[str, dict[str, pb_sip.SIPInboundTrunkInfo]] = {}
    for t in trunks:
        for num in list(t.numbers) or [""]:
            by_inbound = by_number.setdefault(normalize_number(num), {})
            if not t.allowed_numbers:
                other = by_inbound.get("")
                if other is not None:
                    raise TwirpError(
                        "invalid_argument",
                        f'Conflicting inbound SIP Trunks: "{_print_id(t.sip_trunk_id)}" and '
                        f'"{_print_id(other.sip_trunk_id)}", using the same number(s) '
                        f"{_print_numbers(t.numbers)} without AllowedNumbers set",
                    )
                by_inbound[""] = t
            else:
                for allowed in t.allowed_numbers:
                    key = normalize_number(allowed)
                    other = by_inbound.get(key)
                    if other is not None:
                        raise TwirpError(
                            "invalid_argument",
                            f'Conflicting inbound SIP Trunks: "{_print_id(t.sip_trunk_id)}" and '
                            f'"{_print_id(other.sip_trunk_id)}", using the same number(s) '
                            f'{_print_numbers(t.numbers)} and AllowedNumber "{allowed}"',
                        )
                    by_inbound[key] = t


def _pin_and_room(rule: pb_sip.SIPDispatchRuleInfo) -> tuple[str, str]:
    kind = rule.rule.WhichOneof("rule")
    if kind == "dispatch_rule_direct":
        return rule.rule.dispatch_rule_direct.pin, rule.rule.dispatch_rule_direct.room_name
    if kind == "dispatch_rule_individual":
        return rule.rule.dispatch_rule_individual.pin, rule.rule.dispatch_rule_individual.room_prefix
    if kind == "dispatch_rule_callee":
        return rule.rule.dispatch_rule_callee.pin, rule.rule.dispatch_rule_callee.room_prefix
    raise TwirpError("invalid_argument", f"Unsupported SIP Dispatch Rule: {kind}")


def validate_dispatch_rules(rules: Sequence[pb_sip.SIPDispatchRuleInfo]) -> None:
    """livekit's rule: one rule per (trunk, inbound number, caller number, PIN).

    The message names the rule found second in ``rules`` (pass the new rule first, as
    livekit-server does: "... already exists in dispatch rule "<new>" "<its name>"").
    """
    seen: dict[tuple[str, str, str, str], pb_sip.SIPDispatchRuleInfo] = {}
    for r in rules:
        pin, _ = _pin_and_room(r)
        for trunk in list(r.trunk_ids) or [""]:
            for inbound in list(r.inbound_numbers) or [""]:
                for number in list(r.numbers) or [""]:
                    key = (pin, trunk, normalize_number(inbound), normalize_number(number))
                    if key in seen:
                        raise TwirpError(
                            "invalid_argument",
                            "Dispatch rule for the same trunk, inbound number, number, and PIN combination "
                            f'already exists in dispatch rule "{_print_id(seen[key].sip_dispatch_rule_id)}" '
                            f'"{seen[key].name or "<blank name>"}"',
                        )
                    seen[key] = r


def _address_allowed(src_ip: str, masks: Sequence[str]) -> bool:
    if not masks or not src_ip:
        return True
    addr = ip_address(src_ip)
    for mask in masks:
        try:
            if "/" in mask and addr in ip_network(mask, strict=False):
                return True
            if "/" not in mask and addr == ip_address(mask):
                return True
        except ValueError:
            continue
    return False


def match_trunk(
    trunks: Iterable[pb_sip.SIPInboundTrunkInfo], src_ip: str, calling: str, called: str
) -> pb_sip.SIPInboundTrunkInfo | None:
    selected: pb_sip.SIPInboundTrunkInfo | None = None
    default: list[pb_sip.SIPInboundTrunkInfo] = []
    called_norm = normalize_number(called)
    for t in trunks:
        if t.allowed_numbers and normalize_number(calling) not in {
            normalize_number(a) for a in t.allowed_numbers
        }:
            continue
        if not _address_allowed(src_ip, t.allowed_addresses):
            continue
        if not t.numbers:
            default.append(t)
            continue
        if any(normalize_number(n) == called_norm for n in t.numbers):
            if selected is not None:
                raise NoDispatchMatched(f'Multiple SIP Trunks matched for "{called}"')
            selected = t
    if selected is not None:
        return selected
    if len(default) > 1:
        raise NoDispatchMatched(f'Multiple default SIP Trunks matched for "{called}"')
    return default[0] if default else None


def _rule_priority(rule: pb_sip.SIPDispatchRuleInfo) -> int:
    pin, _ = _pin_and_room(rule)
    kind = rule.rule.WhichOneof("rule")
    base = {"dispatch_rule_direct": 0, "dispatch_rule_individual": 1, "dispatch_rule_callee": 2}[kind or ""]
    prio = base if pin else 100 + base
    return prio + (1000 if not rule.inbound_numbers else 0)


def match_dispatch_rule(
    trunk: pb_sip.SIPInboundTrunkInfo | None,
    rules: Iterable[pb_sip.SIPDispatchRuleInfo],
    calling: str,
    called: str,
) -> pb_sip.SIPDispatchRuleInfo:
    rules = list(rules)
    if not rules:
        raise NoDispatchMatched("No SIP Dispatch Rules defined")
    specific, default = [], []
    for r in rules:
        if r.inbound_numbers and calling not in r.inbound_numbers:
            continue
        pin, _ = _pin_and_room(r)
        if pin:
            continue  # the simulated caller sends no PIN
        if not r.trunk_ids:
            default.append(r)
        elif trunk is not None and trunk.sip_trunk_id in r.trunk_ids:
            specific.append(r)
    for group in (specific, default):
        if group:
            validate_dispatch_rules(group)
            return sorted(group, key=lambda r: (_rule_priority(r), _pin_and_room(r)[1]))[0]
    if trunk is None:
        raise NoDispatchMatched(f'No SIP Trunk or Dispatch Rules matched for "{called}"')
    raise NoDispatchMatched(f'No SIP Dispatch Rules matched for "{called}"')


def _apply_list_update(current: Sequence[str], update: pb_models.ListUpdate) -> list[str]:
    out = [] if update.clear else list(update.set) if update.set else list(current)
    out = [v for v in out if v not in set(update.remove)]
    out += [v for v in update.add if v not in out]
    return out


# ---------------------------------------------------------------------------------------
# Webhooks, signed like livekit-server (protocol/webhook/resource_url_notifier.go)
# ---------------------------------------------------------------------------------------


def sign_webhook(body: bytes, api_key: str, api_secret: str, *, ttl: float = 300.0) -> str:
    """The Authorization value livekit-server sends: an HS256 JWT whose sha256 claim is the body hash."""
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    token = (
        lkapi.AccessToken(api_key, api_secret).with_ttl(datetime.timedelta(seconds=ttl)).with_sha256(digest)
    )
    return token.to_jwt()


def encode_webhook(event: pb_webhook.WebhookEvent) -> bytes:
    """protojson as livekit-server marshals it: lowerCamelCase names, defaults omitted."""
    return json_format.MessageToJson(event, indent=None).encode()


async def send_webhook(
    url: str,
    event: pb_webhook.WebhookEvent,
    api_key: str,
    api_secret: str,
    *,
    session: aiohttp.ClientSession | None = None,
    timeout_s: float = 5.0,
) -> int:
    """POSTs one signed webhook; fills ``id``/``created_at`` like the server; returns the HTTP status."""
    if not event.id:
        event.id = new_guid("EV_")
    if not event.created_at:
        event.created_at = int(time.time())
    body = encode_webhook(event)
    headers = {
        "Authorization": sign_webhook(body, api_key, api_secret),
        "Content-Type": "application/webhook+json",
        "User-Agent": "LiveKit",
    }
    own = session is None
    sess = session or aiohttp.ClientSession()
    try:
        async with sess.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            await resp.read()
            return resp.status
    finally:
        if own:
            await sess.close()


# ---------------------------------------------------------------------------------------
# The fake
# ---------------------------------------------------------------------------------------


@dataclass
class RecordedCall:
    service: str
    method: str
    request: Message | None
    content_type: str
    received_at: float
    grants: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    error: str | None = None


@dataclass
class WebhookDelivery:
    url: str
    event: str
    status: int | None
    error: str | None
    sent_at: float


@dataclass
class SimulatedCall:
    room: pb_models.Room
    participant: pb_models.ParticipantInfo
    trunk_id: str
    rule_id: str
    call_id: str
    dispatches: list[pb_dispatch.AgentDispatch]


@dataclass
class _Fault:
    code: str
    msg: str
    method: str | None


@dataclass
class _RoomState:
    room: pb_models.Room
    participants: dict[str, pb_models.ParticipantInfo] = field(default_factory=dict)
    dispatches: dict[str, pb_dispatch.AgentDispatch] = field(default_factory=dict)


Handler = Callable[[Message, "lkapi.access_token.Claims"], Awaitable[Message]]


class LiveKitFake(AiohttpFake):
    """LiveKit's Twirp API on 127.0.0.1. ``async with LiveKitFake(api_key=..., api_secret=...) as lk:``.

    ``LiveKitAPI(url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret)`` talks to it.
    State: ``trunks``, ``dispatch_rules``, ``rooms`` (name -> room state), ``transfers``.
    Records: ``calls`` (every Twirp call), ``webhook_deliveries``.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        api_secret: str | None = None,
        webhook_urls: Sequence[str] = (),
        delay: float = 0.0,
        empty_timeout: int = 300,
        departure_timeout: int = 20,
        sip_hostname: str = "sip.fake.livekit.local",
        auto_join_agents: bool = False,
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(port=port, ssl_context=ssl_context)
        self.api_key = api_key or "API" + secrets.token_hex(6)
        self.api_secret = api_secret or secrets.token_urlsafe(32)
        self.webhook_urls = list(webhook_urls)
        self.delay = delay
        self.empty_timeout = empty_timeout
        self.departure_timeout = departure_timeout
        self.sip_hostname = sip_hostname
        # When set, each dispatch makes an AGENT participant join at once (no real worker needed).
        self.auto_join_agents = auto_join_agents
        self.trunks: dict[str, pb_sip.SIPInboundTrunkInfo] = {}
        self.dispatch_rules: dict[str, pb_sip.SIPDispatchRuleInfo] = {}
        self.rooms: dict[str, _RoomState] = {}
        self.transfers: list[pb_sip.TransferSIPParticipantRequest] = []
        self.calls: list[RecordedCall] = []
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.transfer_failure: tuple[int, str] | None = None
        self.on_dispatch: Callable[[pb_dispatch.AgentDispatch], Any] | None = None
        self._faults: deque[_Fault] = deque()
        self._verifier = lkapi.TokenVerifier(self.api_key, self.api_secret)
        self._webhook_queue: asyncio.Queue[tuple[pb_webhook.WebhookEvent, asyncio.Future[None]]] | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Future[None]] = set()
        self._hook_tasks: set[asyncio.Future[Any]] = set()
        self._routes: dict[tuple[str, str], tuple[type[Message], Handler]] = {
            ("SIP", "CreateSIPInboundTrunk"): (pb_sip.CreateSIPInboundTrunkRequest, self._create_trunk),
            ("SIP", "UpdateSIPInboundTrunk"): (pb_sip.UpdateSIPInboundTrunkRequest, self._update_trunk),
            ("SIP", "GetSIPInboundTrunk"): (pb_sip.GetSIPInboundTrunkRequest, self._get_trunk),
            ("SIP", "ListSIPInboundTrunk"): (pb_sip.ListSIPInboundTrunkRequest, self._list_trunks),
            ("SIP", "DeleteSIPTrunk"): (pb_sip.DeleteSIPTrunkRequest, self._delete_trunk),
            ("SIP", "CreateSIPDispatchRule"): (pb_sip.CreateSIPDispatchRuleRequest, self._create_rule),
            ("SIP", "UpdateSIPDispatchRule"): (pb_sip.UpdateSIPDispatchRuleRequest, self._update_rule),
            ("SIP", "ListSIPDispatchRule"): (pb_sip.ListSIPDispatchRuleRequest, self._list_rules),
            ("SIP", "DeleteSIPDispatchRule"): (pb_sip.DeleteSIPDispatchRuleRequest, self._delete_rule),
            ("SIP", "TransferSIPParticipant"): (pb_sip.TransferSIPParticipantRequest, self._transfer),
            ("AgentDispatchService", "CreateDispatch"): (
                pb_dispatch.CreateAgentDispatchRequest,
                self._create_dispatch,
            ),
            ("AgentDispatchService", "ListDispatch"): (
                pb_dispatch.ListAgentDispatchRequest,
                self._list_dispatch,
            ),
            ("AgentDispatchService", "DeleteDispatch"): (
                pb_dispatch.DeleteAgentDispatchRequest,
                self._delete_dispatch,
            ),
            ("RoomService", "CreateRoom"): (pb_room.CreateRoomRequest, self._create_room),
            ("RoomService", "ListRooms"): (pb_room.ListRoomsRequest, self._list_rooms),
            ("RoomService", "DeleteRoom"): (pb_room.DeleteRoomRequest, self._delete_room),
            ("RoomService", "ListParticipants"): (pb_room.ListParticipantsRequest, self._list_participants),
            ("RoomService", "GetParticipant"): (pb_room.RoomParticipantIdentity, self._get_participant),
            ("RoomService", "RemoveParticipant"): (pb_room.RoomParticipantIdentity, self._remove_participant),
        }

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> LiveKitFake:
        await super().start()
        self._session = aiohttp.ClientSession()
        self._webhook_queue = asyncio.Queue()
        self._webhook_task = asyncio.create_task(self._webhook_worker())
        return self

    async def stop(self) -> None:
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            await asyncio.gather(self._webhook_task, return_exceptions=True)
            self._webhook_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await super().stop()

    def api(self) -> lkapi.LiveKitAPI:
        """A real ``LiveKitAPI`` client for this fake (close it with ``await api.aclose()``)."""
        return lkapi.LiveKitAPI(url=self.url, api_key=self.api_key, api_secret=self.api_secret)

    # -- faults -----------------------------------------------------------------------

    def fail_next(
        self,
        code: str = "unavailable",
        *,
        count: int = 1,
        method: str | None = None,
        msg: str = "service temporarily unavailable",
    ) -> None:
        """The next ``count`` calls (of ``method`` only, if given) answer a Twirp error (503 by default)."""
        self._faults.extend(_Fault(code, msg, method) for _ in range(count))

    def clear_faults(self) -> None:
        self._faults.clear()
        self.delay = 0.0
        self.transfer_failure = None

    # -- HTTP -------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/twirp/livekit.{service}/{method}", self._twirp)
        return app

    async def _twirp(self, request: web.Request) -> web.StreamResponse:
        """Order as in livekit-server: token middleware, Twirp routing and decoding, then grants."""
        service, method = request.match_info["service"], request.match_info["method"]
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        rec = RecordedCall(service, method, None, ctype, time.monotonic())
        self.calls.append(rec)
        route_meta = {"twirp_invalid_route": f"POST {request.path}"}
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            try:
                claims = self._claims(request)
            except _InvalidToken:
                rec.status, rec.error = 401, "invalid authorization token"
                return web.Response(status=401, text="invalid authorization token")
            route = self._routes.get((service, method))
            if route is None:
                raise TwirpError("bad_route", f'no handler for path "{request.path}"', route_meta)
            req_cls, handler = route
            body = await request.read()
            if ctype == "application/json":
                try:
                    req = json_format.Parse(body or b"{}", req_cls(), ignore_unknown_fields=True)
                except json_format.ParseError:
                    raise TwirpError("malformed", "the json request could not be decoded") from None
            elif ctype == "application/protobuf":
                try:
                    req = req_cls.FromString(body)
                except DecodeError:
                    raise TwirpError("malformed", "the protobuf request could not be decoded") from None
            else:
                raise TwirpError("bad_route", f'unexpected Content-Type: "{ctype}"', route_meta)
            rec.request = req
            if claims is not None:
                rec.grants = {
                    "video": {k: v for k, v in vars(claims.video).items() if v},
                    "sip": {k: v for k, v in vars(claims.sip).items() if v},
                }
            fault = self._take_fault(method)
            if fault is not None:
                raise TwirpError(fault.code, fault.msg)
            resp = await handler(req, claims)
        except TwirpError as err:
            rec.status, rec.error = TWIRP_STATUS.get(err.code, 500), err.code
            return err.response()
        if ctype == "application/json":
            # Twirp's JSON: proto field names, unpopulated fields included, int64 as strings
            text = json_format.MessageToJson(
                resp, preserving_proto_field_name=True, indent=None, always_print_fields_with_no_presence=True
            )
            return web.Response(body=text, content_type="application/json")
        return web.Response(body=resp.SerializeToString(), content_type="application/protobuf")

    def _take_fault(self, method: str) -> _Fault | None:
        for f in list(self._faults):
            if f.method is None or f.method == method:
                self._faults.remove(f)
                return f
        return None

    def _claims(self, request: web.Request) -> Any:
        """None without a token (the service then denies); _InvalidToken for a bad one."""
        auth = request.headers.get("Authorization", "")
        if not auth:
            return None
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else auth
        try:
            return self._verifier.verify(token)
        except Exception:  # jwt raises many kinds; all mean "invalid token"
            raise _InvalidToken from None

    # -- permissions (livekit-server pkg/service/auth.go; failures answer unauthenticated) -----

    @staticmethod
    def _denied() -> TwirpError:
        return TwirpError("unauthenticated", "permissions denied")

    def _sip_admin(self, claims: Any) -> None:
        if claims is None or not claims.sip.admin:
            raise self._denied()

    def _room_admin(self, claims: Any, room: str) -> None:
        if claims is None or not claims.video.room_admin or claims.video.room != room:
            raise self._denied()

    def _room_create(self, claims: Any) -> None:
        if claims is None or not claims.video.room_create:
            raise self._denied()

    def _room_list(self, claims: Any) -> None:
        if claims is None or not claims.video.room_list:
            raise self._denied()

    # -- SIP trunks -------------------------------------------------------------------

    def _validate_trunk(self, t: pb_sip.SIPInboundTrunkInfo) -> None:
        if not (t.auth_username and t.auth_password) and not t.allowed_addresses and not t.numbers:
            raise TwirpError(
                "invalid_argument",
                "for security, one of the fields must be set: "
                "AuthUsername+AuthPassword, AllowedAddresses or Numbers",
            )

    async def _create_trunk(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_sip.CreateSIPInboundTrunkRequest)
        self._sip_admin(claims)
        if not req.HasField("trunk"):
            raise TwirpError("invalid_argument", "trunk is required")
        t = pb_sip.SIPInboundTrunkInfo()
        t.CopyFrom(req.trunk)
        if t.sip_trunk_id:
            raise TwirpError("invalid_argument", "trunk ID must not be set")
        self._validate_trunk(t)
        validate_trunks([*self.trunks.values(), t])
        t.sip_trunk_id = new_guid("ST_")
        self.trunks[t.sip_trunk_id] = t
        return t

    def _trunk(self, trunk_id: str) -> pb_sip.SIPInboundTrunkInfo:
        t = self.trunks.get(trunk_id)
        if t is None:
            raise TwirpError("not_found", "requested sip trunk does not exist")
        return t

    async def _update_trunk(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_sip.UpdateSIPInboundTrunkRequest)
        self._sip_admin(claims)
        old = self._trunk(req.sip_trunk_id)
        new = pb_sip.SIPInboundTrunkInfo()
        action = req.WhichOneof("action")
        if action == "replace":
            new.CopyFrom(req.replace)
        elif action == "update":
            new.CopyFrom(old)
            u = req.update
            if u.HasField("numbers"):
                new.ClearField("numbers")
                new.numbers.extend(_apply_list_update(old.numbers, u.numbers))
            if u.HasField("allowed_addresses"):
                new.ClearField("allowed_addresses")
                new.allowed_addresses.extend(_apply_list_update(old.allowed_addresses, u.allowed_addresses))
            if u.HasField("allowed_numbers"):
                new.ClearField("allowed_numbers")
                new.allowed_numbers.extend(_apply_list_update(old.allowed_numbers, u.allowed_numbers))
            for f in ("auth_username", "auth_password", "auth_realm", "name", "metadata", "media_encryption"):
                if u.HasField(f):
                    setattr(new, f, getattr(u, f))
            if u.HasField("media"):
                new.media.CopyFrom(u.media)
        else:
            raise TwirpError("invalid_argument", "either replace or update must be set")
        new.sip_trunk_id = old.sip_trunk_id
        self._validate_trunk(new)
        # livekit-server 1.13.5 does not check number conflicts on update (observed): neither do we.
        self.trunks[new.sip_trunk_id] = new
        return new

    async def _get_trunk(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_sip.GetSIPInboundTrunkRequest)
        self._sip_admin(claims)
        return pb_sip.GetSIPInboundTrunkResponse(trunk=self._trunk(req.sip_trunk_id))

    @staticmethod
    def _page(items: list[Any], id_of: Callable[[Any], str], page: pb_models.Pagination) -> list[Any]:
        items = sorted(items, key=id_of)
        if page.after_id:
            items = [i for i in items if id_of(i) > page.after_id]
        return items[: page.limit] if page.limit > 0 else items

    async def _list_trunks(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_sip.ListSIPInboundTrunkRequest)
        self._sip_admin(claims)
        items = list(self.trunks.values())
        if req.trunk_ids:
            items = [t for t in items if t.sip_trunk_id in req.trunk_ids]
        if req.numbers:
            wanted = {normalize_number(n) for n in req.numbers}
            items = [t for t in items if not t.numbers or wanted & {normalize_number(n) for n in t.numbers}]
        return pb_sip.ListSIPInboundTrunkResponse(items=self._page(items, lambda t: t.sip_trunk_id, req.page))

    async def _delete_trunk(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_sip.DeleteSIPTrunkRequest)
        self._sip_admin(claims)
        t = self.trunks.pop(req.sip_trunk_id, None)
        if t is None:  # livekit-server answers an unknown id with success and the bare id (observed)
            return pb_sip.SIPTrunkInfo(sip_trunk_id=req.sip_trunk_id)
        return pb_sip.SIPTrunkInfo(
            sip_trunk_id=t.sip_trunk_id,
            kind=pb_sip.SIPTrunkInfo.TRUNK_INBOUND,
            inbound_addresses=t.allowed_addresses,
            inbound_numbers=t.allowed_numbers,
            inbound_username=t.auth_username,
            name=t.name,
            metadata=t.metadata,
        )

    # -- SIP dispatch rules -----------------------------------------------------------

    async def _create_rule(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_sip.CreateSIPDispatchRuleRequest)
        self._sip_admin(claims)
        r = pb_sip.SIPDispatchRuleInfo()
        if req.HasField("dispatch_rule"):
            r.CopyFrom(req.dispatch_rule)
        else:  # the deprecated flat fields
            r.rule.CopyFrom(req.rule)
            r.trunk_ids.extend(req.trunk_ids)
            r.hide_phone_number = req.hide_phone_number
            r.inbound_numbers.extend(req.inbound_numbers)
            r.name, r.metadata, r.room_preset = req.name, req.metadata, req.room_preset
            r.attributes.update(req.attributes)
            if req.HasField("room_config"):
                r.room_config.CopyFrom(req.room_config)
        if r.sip_dispatch_rule_id:
            raise TwirpError("invalid_argument", "rule ID must not be set")
        if r.rule.WhichOneof("rule") is None:
            raise TwirpError("invalid_argument", "missing rule")
        validate_dispatch_rules([r, *self.dispatch_rules.values()])
        r.sip_dispatch_rule_id = new_guid("SDR_")
        self.dispatch_rules[r.sip_dispatch_rule_id] = r
        return r

    def _rule(self, rule_id: str) -> pb_sip.SIPDispatchRuleInfo:
        r = self.dispatch_rules.get(rule_id)
        if r is None:
            raise TwirpError("not_found", "requested sip dispatch rule does not exist")
        return r

    async def _update_rule(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_sip.UpdateSIPDispatchRuleRequest)
        self._sip_admin(claims)
        old = self._rule(req.sip_dispatch_rule_id)
        new = pb_sip.SIPDispatchRuleInfo()
        action = req.WhichOneof("action")
        if action == "replace":
            new.CopyFrom(req.replace)
        elif action == "update":
            new.CopyFrom(old)
            u = req.update
            if u.HasField("trunk_ids"):
                new.ClearField("trunk_ids")
                new.trunk_ids.extend(_apply_list_update(old.trunk_ids, u.trunk_ids))
            if u.HasField("rule"):
                new.rule.CopyFrom(u.rule)
            for f in ("name", "metadata", "media_encryption"):
                if u.HasField(f):
                    setattr(new, f, getattr(u, f))
            if u.attributes:
                new.attributes.clear()
                new.attributes.update(u.attributes)
            if u.HasField("media"):
                new.media.CopyFrom(u.media)
        else:
            raise TwirpError("invalid_argument", "either replace or update must be set")
        new.sip_dispatch_rule_id = old.sip_dispatch_rule_id
        # livekit-server 1.13.5 does not check conflicts on update (observed): neither do we.
        self.dispatch_rules[new.sip_dispatch_rule_id] = new
        return new

    async def _list_rules(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_sip.ListSIPDispatchRuleRequest)
        self._sip_admin(claims)
        items = list(self.dispatch_rules.values())
        if req.dispatch_rule_ids:
            items = [r for r in items if r.sip_dispatch_rule_id in req.dispatch_rule_ids]
        if req.trunk_ids:
            items = [r for r in items if not r.trunk_ids or set(r.trunk_ids) & set(req.trunk_ids)]
        return pb_sip.ListSIPDispatchRuleResponse(
            items=self._page(items, lambda r: r.sip_dispatch_rule_id, req.page)
        )

    async def _delete_rule(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_sip.DeleteSIPDispatchRuleRequest)
        self._sip_admin(claims)
        return self.dispatch_rules.pop(self._rule(req.sip_dispatch_rule_id).sip_dispatch_rule_id)

    async def _transfer(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_sip.TransferSIPParticipantRequest)
        if claims is None or not claims.sip.call:
            raise self._denied()
        self._room_admin(claims, req.room_name)
        state = self._room(req.room_name, missing=("not_found", self.PARTICIPANT_NOT_FOUND))
        p = state.participants.get(req.participant_identity)
        if p is None:
            raise TwirpError("not_found", self.PARTICIPANT_NOT_FOUND)
        if p.kind != pb_models.ParticipantInfo.SIP:
            raise TwirpError("failed_precondition", "participant is not a SIP participant")
        if not req.transfer_to:
            raise TwirpError("invalid_argument", "missing transfer_to")
        self.transfers.append(req)
        transfer_id = new_guid("SCT_")
        if self.transfer_failure is not None:
            code, status = self.transfer_failure
            raise TwirpError(
                "unavailable",
                f"transfer failed: {code} {status}",
                {
                    "sip_status_code": str(code),
                    "sip_status": status,
                    "sip_transfer_reason": "STR_REJECTED",
                    "sip_transfer_id": transfer_id,
                },
            )
        # a cold transfer (REFER) hands the call over: the SIP participant leaves the room
        await self._leave(
            req.room_name, req.participant_identity, pb_models.DisconnectReason.CLIENT_INITIATED, wait=False
        )
        return pb_sip.TransferSIPParticipantResponse(
            transfer_id=transfer_id, status=pb_sip.STS_TRANSFER_SUCCESSFUL, reason=pb_sip.STR_COMPLETED
        )

    # -- rooms ------------------------------------------------------------------------

    # livekit-server's room service answers through its RPC layer, hence the prefixes (observed).
    ROOM_NOT_FOUND = "twirp error unknown: requested room does not exist"
    PARTICIPANT_NOT_FOUND = "twirp error unknown: participant does not exist"
    NO_ROOM_NODE = "twirp error unknown: no response from servers"

    def _room(self, name: str, *, missing: tuple[str, str] = ("not_found", ROOM_NOT_FOUND)) -> _RoomState:
        state = self.rooms.get(name)
        if state is None:
            raise TwirpError(*missing)
        return state

    def _ensure_room(
        self, name: str, agents: Sequence[Any] = (), **fields: Any
    ) -> tuple[_RoomState, list[pb_dispatch.AgentDispatch]]:
        """The room (created if needed) and the dispatches its creation made.

        Like livekit-server, a room created without agent dispatches gets an implicit one for
        unnamed agents (agent_name ""); it triggers neither ``on_dispatch`` nor auto-join.
        """
        state = self.rooms.get(name)
        if state is not None:
            return state, []
        now = time.time()
        room = pb_models.Room(
            sid=new_guid("RM_"),
            name=name,
            creation_time=int(now),
            creation_time_ms=int(now * 1000),
            empty_timeout=fields.get("empty_timeout") or self.empty_timeout,
            departure_timeout=fields.get("departure_timeout") or self.departure_timeout,
            max_participants=fields.get("max_participants", 0),
            metadata=fields.get("metadata", ""),
        )
        state = self.rooms[name] = _RoomState(room)
        self._emit(pb_webhook.WebhookEvent(event="room_started", room=room))
        if not agents:
            return state, [self._add_dispatch(state, "", "", implicit=True)]
        return state, [self._add_dispatch(state, a.agent_name, a.metadata) for a in agents]

    async def _create_room(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_room.CreateRoomRequest)
        self._room_create(claims)
        if not req.name:
            raise TwirpError("invalid_argument", "room name is required")
        state, _ = self._ensure_room(
            req.name,
            req.agents,
            empty_timeout=req.empty_timeout,
            departure_timeout=req.departure_timeout,
            max_participants=req.max_participants,
            metadata=req.metadata,
        )
        return state.room

    async def _list_rooms(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_room.ListRoomsRequest)
        self._room_list(claims)
        rooms = [s.room for n, s in self.rooms.items() if not req.names or n in req.names]
        return pb_room.ListRoomsResponse(rooms=rooms)

    async def _delete_room(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_room.DeleteRoomRequest)
        self._room_create(claims)
        state = self._room(req.room)
        for identity in list(state.participants):
            await self._leave(
                req.room,
                identity,
                pb_models.DisconnectReason.ROOM_DELETED,
                wait=False,
                finish_when_empty=False,
            )
        self._finish_room(req.room)
        return pb_room.DeleteRoomResponse()

    async def _list_participants(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_room.ListParticipantsRequest)
        self._room_admin(claims, req.room)
        state = self.rooms.get(req.room)  # an unknown room lists nobody (observed)
        return pb_room.ListParticipantsResponse(
            participants=list(state.participants.values()) if state else []
        )

    async def _get_participant(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_room.RoomParticipantIdentity)
        self._room_admin(claims, req.room)
        state = self._room(req.room, missing=("not_found", self.PARTICIPANT_NOT_FOUND))
        p = state.participants.get(req.identity)
        if p is None:
            raise TwirpError("not_found", self.PARTICIPANT_NOT_FOUND)
        return p

    async def _remove_participant(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_room.RoomParticipantIdentity)
        self._room_admin(claims, req.room)
        state = self._room(req.room, missing=("not_found", self.PARTICIPANT_NOT_FOUND))
        if req.identity not in state.participants:
            raise TwirpError("not_found", self.PARTICIPANT_NOT_FOUND)
        await self._leave(req.room, req.identity, pb_models.DisconnectReason.PARTICIPANT_REMOVED, wait=False)
        return pb_room.RemoveParticipantResponse()

    # -- agent dispatch ---------------------------------------------------------------

    def _add_dispatch(
        self, state: _RoomState, agent_name: str, metadata: str, *, implicit: bool = False
    ) -> pb_dispatch.AgentDispatch:
        d = pb_dispatch.AgentDispatch(
            id=new_guid("AD_"), agent_name=agent_name, room=state.room.name, metadata=metadata
        )
        d.state.created_at = time.time_ns()
        state.dispatches[d.id] = d
        if implicit:
            return d
        if self.auto_join_agents:
            now = time.time()
            agent = pb_models.ParticipantInfo(
                sid=new_guid("PA_"),
                identity=f"agent-{d.id}",
                name=agent_name,
                metadata=metadata,
                state=pb_models.ParticipantInfo.ACTIVE,
                kind=pb_models.ParticipantInfo.AGENT,
                joined_at=int(now),
                joined_at_ms=int(now * 1000),
                is_publisher=True,
            )
            state.participants[agent.identity] = agent
            state.room.num_participants = len(state.participants)
            self._emit(
                pb_webhook.WebhookEvent(event="participant_joined", room=state.room, participant=agent)
            )
        if self.on_dispatch is not None:
            result = self.on_dispatch(d)
            if asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result)
                self._hook_tasks.add(task)
                task.add_done_callback(self._hook_tasks.discard)
        return d

    async def _create_dispatch(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_dispatch.CreateAgentDispatchRequest)
        self._room_admin(claims, req.room)
        if not req.room:
            raise TwirpError("invalid_argument", "room name is required")
        state, _ = self._ensure_room(req.room)  # livekit auto-creates the room
        return self._add_dispatch(state, req.agent_name, req.metadata)

    async def _list_dispatch(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_dispatch.ListAgentDispatchRequest)
        self._room_admin(claims, req.room)
        state = self._room(req.room, missing=("unavailable", self.NO_ROOM_NODE))
        items = [d for d in state.dispatches.values() if not req.dispatch_id or d.id == req.dispatch_id]
        return pb_dispatch.ListAgentDispatchResponse(agent_dispatches=items)

    async def _delete_dispatch(self, req: Message, claims: Any) -> Message:
        assert isinstance(req, pb_dispatch.DeleteAgentDispatchRequest)
        self._room_admin(claims, req.room)
        state = self._room(req.room, missing=("unavailable", self.NO_ROOM_NODE))
        d = state.dispatches.pop(req.dispatch_id, None)
        if d is None:
            raise TwirpError("not_found", "twirp error unknown: dispatch ID not found")
        d.state.deleted_at = time.time_ns()
        return d

    # -- the SIP side of a call, and webhooks -------------------------------------------

    async def simulate_inbound_call(
        self,
        calling: str,
        called: str,
        *,
        src_ip: str = "127.0.0.1",
        extra_attributes: dict[str, str] | None = None,
        wait_webhooks: bool = True,
    ) -> SimulatedCall:
        """A caller dials ``called`` from ``calling``: what livekit-sip would do, in the fake.

        Matches trunk and dispatch rule like livekit, creates the room named by the rule,
        joins a SIP participant with livekit's ``sip.*`` attributes, creates the rule's agent
        dispatches, and sends room_started + participant_joined webhooks (awaited unless
        ``wait_webhooks=False``). Raises :class:`NoDispatchMatched` when livekit would reject it.
        """
        trunk = match_trunk(self.trunks.values(), src_ip, calling, called)
        rule = match_dispatch_rule(trunk, self.dispatch_rules.values(), calling, called)
        trunk_id = trunk.sip_trunk_id if trunk else ""
        call_id = new_guid("SCL_")
        attrs = dict(rule.attributes)
        attrs.update(extra_attributes or {})
        attrs[ATTR_SIP_CALL_ID] = call_id
        attrs[ATTR_SIP_TRUNK_ID] = trunk_id
        frm, identity, name = calling, "sip_" + calling, "Phone " + calling
        if rule.hide_phone_number:
            identity = "sip_" + hashlib.sha256(calling.encode()).hexdigest()[:16]
            frm = calling[-4:] if len(calling) > 4 else calling[-1:]
            name = "Phone " + frm
        else:
            attrs[ATTR_SIP_PHONE_NUMBER] = calling
            attrs[ATTR_SIP_TRUNK_NUMBER] = called
        attrs[ATTR_SIP_HOSTNAME] = self.sip_hostname
        attrs[ATTR_SIP_RULE_ID] = rule.sip_dispatch_rule_id
        attrs[ATTR_SIP_CALL_STATUS] = "active"
        kind = rule.rule.WhichOneof("rule")
        if kind == "dispatch_rule_individual":
            room_name = f"{rule.rule.dispatch_rule_individual.room_prefix}_{frm}_{new_guid('')}"
        elif kind == "dispatch_rule_callee":
            callee = rule.rule.dispatch_rule_callee
            room_name = f"{callee.room_prefix}_{called}" if callee.room_prefix else called
            if callee.randomize:
                room_name += "_" + new_guid("")
        else:
            room_name = rule.rule.dispatch_rule_direct.room_name
        cfg = rule.room_config
        state, dispatches = self._ensure_room(
            room_name,
            cfg.agents,
            empty_timeout=cfg.empty_timeout,
            departure_timeout=cfg.departure_timeout,
            max_participants=cfg.max_participants,
            metadata=cfg.metadata,
        )
        now = time.time()
        p = pb_models.ParticipantInfo(
            sid=new_guid("PA_"),
            identity=identity,
            name=name,
            state=pb_models.ParticipantInfo.ACTIVE,
            kind=pb_models.ParticipantInfo.SIP,
            joined_at=int(now),
            joined_at_ms=int(now * 1000),
            metadata=rule.metadata,
            attributes=attrs,
            is_publisher=True,
        )
        await self.join(room_name, p, wait=wait_webhooks)
        return SimulatedCall(state.room, p, trunk_id, rule.sip_dispatch_rule_id, call_id, dispatches)

    async def join(self, room: str, participant: pb_models.ParticipantInfo, *, wait: bool = True) -> None:
        """Adds a participant (e.g. the agent) to a room, with its participant_joined webhook."""
        state, _ = self._ensure_room(room)
        state.participants[participant.identity] = participant
        state.room.num_participants = len(state.participants)
        fut = self._emit(
            pb_webhook.WebhookEvent(event="participant_joined", room=state.room, participant=participant)
        )
        if wait:
            await fut

    async def hangup(self, room: str, identity: str, *, wait: bool = True) -> None:
        """The participant leaves (caller hangs up): participant_left, then room_finished when empty."""
        await self._leave(room, identity, pb_models.DisconnectReason.CLIENT_INITIATED, wait=wait)

    async def _leave(
        self, room: str, identity: str, reason: int, *, wait: bool, finish_when_empty: bool = True
    ) -> None:
        state = self._room(room)
        p = state.participants.pop(identity, None)
        if p is None:
            raise TwirpError("not_found", "participant does not exist")
        p.state = pb_models.ParticipantInfo.DISCONNECTED
        p.disconnect_reason = reason  # type: ignore[assignment]
        state.room.num_participants = len(state.participants)
        futs = [self._emit(pb_webhook.WebhookEvent(event="participant_left", room=state.room, participant=p))]
        if finish_when_empty and all(
            x.kind == pb_models.ParticipantInfo.AGENT for x in state.participants.values()
        ):
            # the last caller left: agents leave too (livekit-agents closes on disconnect), room ends
            for agent_id in list(state.participants):
                agent = state.participants.pop(agent_id)
                agent.state = pb_models.ParticipantInfo.DISCONNECTED
                agent.disconnect_reason = pb_models.DisconnectReason.CLIENT_INITIATED
                state.room.num_participants = len(state.participants)
                futs.append(
                    self._emit(
                        pb_webhook.WebhookEvent(event="participant_left", room=state.room, participant=agent)
                    )
                )
            futs.append(self._finish_room(room))
        if wait:
            await asyncio.gather(*futs)

    def _finish_room(self, room: str) -> asyncio.Future[None]:
        state = self.rooms.pop(room)
        return self._emit(pb_webhook.WebhookEvent(event="room_finished", room=state.room))

    def _emit(self, event: pb_webhook.WebhookEvent) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.webhook_urls or self._webhook_queue is None:
            fut.set_result(None)
            return fut
        ev = pb_webhook.WebhookEvent()
        ev.CopyFrom(event)
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)
        self._webhook_queue.put_nowait((ev, fut))
        return fut

    async def _webhook_worker(self) -> None:
        """Delivers webhooks in order, one at a time, like livekit's per-resource queue."""
        assert self._webhook_queue is not None
        while True:
            event, fut = await self._webhook_queue.get()
            for url in list(self.webhook_urls):
                status, error = None, None
                try:
                    status = await send_webhook(
                        url, event, self.api_key, self.api_secret, session=self._session
                    )
                except (TimeoutError, aiohttp.ClientError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                self.webhook_deliveries.append(
                    WebhookDelivery(url, event.event, status, error, time.monotonic())
                )
            if not fut.done():
                fut.set_result(None)

    async def webhooks_idle(self, timeout_s: float = 5.0) -> None:
        """Waits until every queued webhook was delivered (or failed)."""
        if self._pending:
            await asyncio.wait_for(asyncio.gather(*list(self._pending)), timeout_s)
