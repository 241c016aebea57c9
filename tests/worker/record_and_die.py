"""A worker process that records a call in real time until it is killed (``kill -9``) by the test.

Run as ``python -m tests.worker.record_and_die CONFIG_JSON``. The caller channel gets the PCM
file named in the config, looped, paced as a phone line delivers it (20 ms frames); the agent
channel gets a 1 s tone every 3 s, placed when "played". Prints ``fed <seconds>`` as it goes.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
from livekit import rtc

from voicehive.recording_store import BucketAccess, s3_client
from voicehive_worker.recording import SAMPLE_RATE, CallRecording, RecordingTarget, recording_key

FRAME = SAMPLE_RATE // 50


async def main(config: dict[str, str], caller: np.ndarray) -> None:
    access = BucketAccess(bucket=config["bucket"], region=config["region"], endpoint=config["endpoint"],
                          access_key_id=config["access_key_id"], secret_access_key=config["secret_access_key"],
                          ca_file=config["ca_file"])
    target = RecordingTarget(config["namespace"], config["line"], config["session"], config["caller_hash"],
                             dt.datetime.now(dt.UTC) + dt.timedelta(days=7))
    key = recording_key(base64.b64decode(config["master_key"]), target.namespace, target.line)
    rec = CallRecording(s3_client(access), access.bucket, target, key)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    agent_tone = (np.sin(2 * np.pi * 800 * t) * 0.3 * 32767).astype("<i2")
    await rec.start()
    start = time.monotonic()
    n = 0
    while True:
        offset = (n * FRAME) % (len(caller) - FRAME)
        rec.caller_frame(rtc.AudioFrame(caller[offset : offset + FRAME].tobytes(), SAMPLE_RATE, 1, FRAME))
        n += 1
        if n % 150 == 0:  # every 3 s: one second of agent speech, starting now
            rec.agent_played(time.time(), agent_tone)
        if n % 50 == 0:
            print(f"fed {n * FRAME / SAMPLE_RATE:.1f}", flush=True)
        await asyncio.sleep(max(0.0, start + n * 0.02 - time.monotonic()))


if __name__ == "__main__":
    settings = json.loads(sys.argv[1])
    asyncio.run(main(settings, np.frombuffer(Path(settings["caller_pcm"]).read_bytes(), dtype="<i2")))
