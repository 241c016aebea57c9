"""The Mews and Apaleo adapters over HTTPS against loopback fakes that speak the documented APIs.

Covers prices quoted from the PMS, the short availability cache (and that a quote is always
fresh), bookings and holds, auth failure, token refresh, 429 with Retry-After, timeouts,
outages and refusals: each one a PmsError/PmsUnavailable the agent can say.
"""

from __future__ import annotations

import datetime as dt
import ssl

import pytest

from tests.fakes.apaleo import ApaleoFake
from tests.fakes.mews import MewsFake
from tests.fakes.tls import TlsFiles
from tests.worker.callrig import line_spec
from voicehive import contract
from voicehive.api.models import PmsSpec
from voicehive_worker.backoffice import build_pms
from voicehive_worker.pms import FactsPms, Guest, PmsError, PmsUnavailable, make_request
from voicehive_worker.pms_apaleo import ApaleoPms
from voicehive_worker.pms_mews import MewsPms

TODAY = dt.date(2026, 12, 1)


def mews_spec(fake: MewsFake, **extra: object) -> PmsSpec:
    return PmsSpec.model_validate(
        {"kind": "mews", "endpoint": fake.url, "credentials": {"secretName": "mews"}, "propertyId": fake.service_id,
         "rateId": fake.rate_id, "timeoutSeconds": 1.0, **extra}
    )


def apaleo_spec(fake: ApaleoFake, **extra: object) -> PmsSpec:
    return PmsSpec.model_validate(
        {"kind": "apaleo", "endpoint": fake.url, "tokenEndpoint": fake.token_url, "credentials": {"secretName": "apaleo"},
         "propertyId": fake.property_id, "timeoutSeconds": 1.0, **extra}
    )


def mews_pms(fake: MewsFake, ctx: ssl.SSLContext, token: str | None = None, **extra: object) -> MewsPms:
    return MewsPms(mews_spec(fake, **extra), line_spec().facts, client_token=fake.client_token,
                   access_token=token or fake.access_token, time_zone="Europe/Berlin", verify=ctx)


def apaleo_pms(fake: ApaleoFake, ctx: ssl.SSLContext, secret: str | None = None, clock: object = None) -> ApaleoPms:
    kwargs = {"clock": clock} if clock else {}
    return ApaleoPms(apaleo_spec(fake), line_spec().facts, client_id=fake.client_id,
                     client_secret=secret or fake.client_secret, verify=ctx, **kwargs)  # type: ignore[arg-type]


STAY = make_request("2026-12-12", 2, 2, today=TODAY)


async def test_mews_quotes_the_fakes_prices_with_documented_requests(mews: MewsFake, tls: TlsFiles) -> None:
    pms = mews_pms(mews, tls.client_context())
    offers = await pms.availability(STAY)
    assert [(o.room_name, o.total, o.currency) for o in offers] == [("Double Room", 238.0, "EUR"), ("Family Suite", 438.0, "EUR")]
    body = mews.calls("services/getAvailability/2024-01-22")[0]
    assert body["Client"] and body["ServiceId"] == mews.service_id
    assert body["FirstTimeUnitStartUtc"] == "2026-12-11T23:00:00Z"  # local midnight in Berlin
    assert body["LastTimeUnitStartUtc"] == "2026-12-12T23:00:00Z"
    await pms.availability(STAY)  # cached for the line: the PMS is asked once
    assert len(mews.calls("services/getAvailability/2024-01-22")) == 1
    quote = await pms.quote(make_request("2026-12-12", 2, 2, today=TODAY, room_code="double"))
    assert (quote.total, quote.rate_id) == (238.0, mews.rate_id)
    assert len(mews.calls("services/getAvailability/2024-01-22")) == 2  # a quote is never from the cache
    await pms.aclose()


async def test_mews_books_and_holds_and_reads_the_number(mews: MewsFake, tls: TlsFiles) -> None:
    pms = mews_pms(mews, tls.client_context())
    request = make_request("2026-12-12", 2, 2, today=TODAY, room_code="Double Room")
    offer = await pms.quote(request)
    booked = await pms.book(request, Guest.from_full_name("Anna Schmidt"), offer, hold=False)
    held = await pms.book(request, Guest.from_full_name("Jan Novak"), offer, hold=True)
    assert [r["Number"] for r in mews.reservations] == [booked.confirmation, held.confirmation]
    assert (booked.confirmed, held.confirmed) == (True, False)
    assert [r["State"] for r in mews.reservations] == ["Confirmed", "Optional"]
    assert mews.reservations[0]["PersonCounts"] == [{"AgeCategoryId": mews.adult_id, "Count": 2}]
    assert mews.reservations[0]["StartUtc"] == "2026-12-12T14:00:00Z"  # 15:00 check-in, Berlin
    await pms.aclose()


async def test_mews_failures_become_words_for_the_caller(mews: MewsFake, tls: TlsFiles) -> None:
    bad = mews_pms(mews, tls.client_context(), token="wrong")
    with pytest.raises(PmsUnavailable, match="refused our access"):
        await bad.availability(STAY)
    await bad.aclose()
    pms = mews_pms(mews, tls.client_context())
    mews.faults.append((429, {"Retry-After": "0"}, {"Message": "Too many requests."}))
    assert await pms.availability(STAY)  # a short Retry-After is waited out once
    mews.faults.append((429, {"Retry-After": "30"}, {"Message": "Too many requests."}))
    with pytest.raises(PmsUnavailable, match="busy"):
        await pms.quote(make_request("2026-12-13", 1, 1, today=TODAY, room_code="double"))
    mews.faults.append((400, {}, {"Message": "Invalid RateId."}))
    with pytest.raises(PmsError) as refused:
        await pms.quote(make_request("2026-12-14", 1, 1, today=TODAY, room_code="double"))
    assert not isinstance(refused.value, PmsUnavailable) and "RateId" not in str(refused.value)
    mews.down = True
    with pytest.raises(PmsUnavailable, match="problem"):
        await pms.quote(make_request("2026-12-15", 1, 1, today=TODAY, room_code="double"))
    mews.down, mews.delay = False, 1.5
    with pytest.raises(PmsUnavailable, match="in time"):
        await pms.quote(make_request("2026-12-16", 1, 1, today=TODAY, room_code="double"))
    await pms.aclose()


async def test_apaleo_offers_with_one_token_and_bookings(apaleo: ApaleoFake, tls: TlsFiles) -> None:
    pms = apaleo_pms(apaleo, tls.client_context())
    offers = await pms.availability(STAY)
    assert [(o.room_name, o.total, o.rate_id) for o in offers] == [("Double Room", 248.0, "BER-DBL-FLEX"), ("Junior Suite", 398.0, "BER-STE-FLEX")]
    assert apaleo.requests[0][2] == {"propertyId": "BER", "arrival": "2026-12-12", "departure": "2026-12-14", "adults": "2", "channelCode": "Direct"}
    request = make_request("2026-12-12", 2, 2, today=TODAY, room_code="junior suite")
    offer = await pms.quote(request)
    booked = await pms.book(request, Guest.from_full_name("Anna Schmidt"), offer, hold=False)
    assert booked.confirmation == apaleo.bookings[0]["id"] and (booked.total, booked.currency) == (398.0, "EUR")
    sent = apaleo.bookings[0]["reservations"][0]
    assert sent["timeSlices"] == [{"ratePlanId": "BER-STE-FLEX"}] * 2 and sent["primaryGuest"]["lastName"] == "Schmidt"
    assert apaleo.token_requests == 1
    with pytest.raises(PmsError, match="staff"):
        await pms.book(request, Guest.from_full_name("Anna Schmidt"), offer, hold=True)
    await pms.aclose()


async def test_apaleo_token_expiry_and_revocation_are_refreshed(apaleo: ApaleoFake, tls: TlsFiles) -> None:
    now = [0.0]
    pms = apaleo_pms(apaleo, tls.client_context(), clock=lambda: now[0])
    await pms.quote(make_request("2026-12-12", 1, 1, today=TODAY, room_code="double"))
    now[0] += 3600  # past expires_in minus the margin
    await pms.quote(make_request("2026-12-12", 1, 1, today=TODAY, room_code="double"))
    assert apaleo.token_requests == 2
    apaleo.revoke_tokens()  # server-side revocation: 401, then one refresh and a retry
    await pms.quote(make_request("2026-12-12", 1, 1, today=TODAY, room_code="double"))
    assert apaleo.token_requests == 3
    await pms.aclose()
    wrong = apaleo_pms(apaleo, tls.client_context(), secret="nope")
    with pytest.raises(PmsUnavailable, match="refused our access"):
        await wrong.availability(STAY)
    await wrong.aclose()


async def test_apaleo_failures_become_words_for_the_caller(apaleo: ApaleoFake, tls: TlsFiles) -> None:
    pms = apaleo_pms(apaleo, tls.client_context())
    apaleo.faults.append((429, {"Retry-After": "0"}, {"messages": ["Too Many Requests"]}))
    assert await pms.availability(STAY)
    apaleo.faults.append((429, {"Retry-After": "60"}, {"messages": ["Too Many Requests"]}))
    with pytest.raises(PmsUnavailable, match="busy"):
        await pms.quote(make_request("2026-12-13", 1, 1, today=TODAY, room_code="double"))
    apaleo.faults.append((422, {}, {"messages": ["ratePlanId is not bookable"]}))
    with pytest.raises(PmsError, match="did not accept"):
        await pms.quote(make_request("2026-12-13", 1, 1, today=TODAY, room_code="double"))
    apaleo.down = True
    with pytest.raises(PmsUnavailable):
        await pms.quote(make_request("2026-12-13", 1, 1, today=TODAY, room_code="double"))
    apaleo.down, apaleo.delay = False, 1.5
    with pytest.raises(PmsUnavailable, match="in time"):
        await pms.quote(make_request("2026-12-13", 1, 1, today=TODAY, room_code="double"))
    await pms.aclose()


async def test_unreachable_pms_is_unavailable(tls: TlsFiles) -> None:
    fake = MewsFake(ssl_context=tls.server_context())
    await fake.start()
    await fake.stop()  # the port is closed now: connection refused
    pms = mews_pms(fake, tls.client_context())
    with pytest.raises(PmsUnavailable, match="cannot be reached"):
        await pms.availability(STAY)
    await pms.aclose()


def test_build_pms_per_line(mews: MewsFake) -> None:
    assert isinstance(build_pms(line_spec(), {}), FactsPms)
    spec = line_spec(pms=mews_spec(mews).to_wire())
    with pytest.raises(ValueError, match=contract.ENV_PMS_ID):
        build_pms(spec, {})
    env = {contract.ENV_PMS_ID: "a", contract.ENV_PMS_SECRET: "b"}
    assert isinstance(build_pms(spec, env), MewsPms)
    with pytest.raises(ValueError, match="propertyId"):
        PmsSpec.model_validate({"kind": "apaleo", "endpoint": "https://api.apaleo.com"})
    with pytest.raises(ValueError, match="endpoint"):
        PmsSpec.model_validate({"kind": "mews", "endpoint": "http://api.mews.com", "credentials": {"secretName": "m"}, "propertyId": "x"})
