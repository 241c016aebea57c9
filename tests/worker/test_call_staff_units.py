"""``voicehive call``'s staff delivery on its own: which line it names, what it says when it cannot
deliver, and that nothing is lost when the hotel's endpoint is down as the command exits."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from redis.asyncio import Redis

from tests.fixtures.redis import free_port
from tests.worker.callrig import line_spec
from tests.worker.speech import espeak_available
from voicehive import contract
from voicehive.api.models import HotelLineSpec
from voicehive.delivery import due_key, queue_id
from voicehive.privacy import TRANSCRIPT_KEY_ENV, generate_key_b64
from voicehive_worker.agent import LocalCallActions
from voicehive_worker.call_staff import line_name, staff_for_call
from voicehive_worker.simulate import run_call


def _webhook_line(port: int) -> HotelLineSpec:
    """A line whose only channel is a webhook on a loopback port nobody listens on."""
    return line_spec(staffDelivery={"webhook": {"url": f"https://127.0.0.1:{port}/hook", "secretRef": {"name": "h", "key": "k"}}})


def test_line_name_from_env_then_metadata_then_file(tmp_path: Path) -> None:
    hotelline = tmp_path / "desk.yaml"
    hotelline.write_text(yaml.safe_dump({"kind": contract.HOTELLINE_KIND, "metadata": {"name": "lindenhof-main"}, "spec": {}}))
    bare = tmp_path / "bare-spec.yaml"
    bare.write_text("hotelId: x\n")
    assert line_name(hotelline, {}) == "lindenhof-main"
    assert line_name(hotelline, {contract.ENV_LINE_NAME: "from-env"}) == "from-env"
    assert line_name(bare, {}) == "bare-spec"


async def test_without_redis_the_call_runs_and_says_nothing_is_delivered(capsys: pytest.CaptureFixture[str]) -> None:
    local = LocalCallActions()
    async with staff_for_call(_webhook_line(free_port()), {}, "lindenhof-main") as wrap:
        assert wrap(local) is local
    assert contract.ENV_REDIS_URL in capsys.readouterr().err


async def test_endpoint_down_at_exit_leaves_the_request_queued_for_a_pod(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {contract.ENV_REDIS_URL: redis_url, contract.ENV_WEBHOOK_SECRET: "s3cret", TRANSCRIPT_KEY_ENV: generate_key_b64()}
    async with staff_for_call(_webhook_line(free_port()), env, "lindenhof-main", drain_timeout_s=0.5) as wrap:
        reference = await wrap(LocalCallActions()).save_request("message", {"name": "Anna", "message": "call back"})
    assert "1 staff deliveries still pending" in capsys.readouterr().err
    redis = Redis.from_url(redis_url)
    queued = await redis.zrange(due_key(queue_id("default", "lindenhof-main")), 0, -1)
    await redis.aclose()
    assert [q.decode() for q in queued] == [f"{reference}.webhook"]


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is needed for caller speech")
def test_call_without_the_transcript_key_exits_2_naming_it(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    line = tmp_path / "line.yaml"
    line.write_text(yaml.safe_dump(_webhook_line(free_port()).model_dump(by_alias=True, mode="json")))
    monkeypatch.setenv(contract.ENV_REDIS_URL, redis_url)
    monkeypatch.delenv(TRANSCRIPT_KEY_ENV, raising=False)
    assert run_call(line, ["hello"], [], None, False) == 2
    assert TRANSCRIPT_KEY_ENV in capsys.readouterr().err
