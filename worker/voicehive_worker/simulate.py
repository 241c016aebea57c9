"""`voicehive call`: a simulated phone call through the real AgentSession pipeline.

A simulated caller speaks each ``--say`` (synthesised with eSpeak NG) or plays each ``--audio``
WAV into the session's audio input in real time (20 ms frames); the worker's HotelAgent answers
through whatever engines are configured - the embedded local engines by default, Riva / Azure
OpenAI / ElevenLabs when their settings are in the environment (VOICEHIVE_CALL_ENGINES=providers,
VOICEHIVE_RIVA_SERVER, AZURE_OPENAI_API_KEY, ELEVEN_API_KEY, optional VOICEHIVE_LLM_ENDPOINT and
VOICEHIVE_TTS_ENDPOINT; all three set selects them unless VOICEHIVE_CALL_ENGINES=local). Per turn it reports what was said, recognised, the intent, the reply
and where the time went; the reply audio goes to ``--out`` as WAV files.

WHY the real session: this is what a hotel's own CI runs against its line configuration, so it
must exercise turn taking, tools and speech exactly like a phone call does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voicehive.api.models import HotelLineSpec
from voicehive.intents import classify, guess_language

from .engines.espeak_tts import EspeakNotInstalled, EspeakOptions, resample, synthesize_pcm
from .engines.text import base_language
from .language import first_language

SAMPLE_RATE = 16000
ENV_ENGINES = "VOICEHIVE_CALL_ENGINES"  # "local" (default) or "providers"
TURN_TIMEOUT_S = 30.0
GREETING_TIMEOUT_S = 20.0
LEAD_SILENCE_S = 0.4

# Caller voices: eSpeak NG variants the local ASR recognises best (see docs/local-engines.md).
CALLER_VOICES: dict[str, str] = {"en": "en-us+f5", "de": "de+f5", "fr": "fr-fr+f5", "es": "es+f5", "it": "it+f5"}
CALLER_WPM = 150


class CallError(RuntimeError):
    """A problem with the call's inputs, said in plain words (exit code 2)."""


@dataclass
class TurnReport:
    """One row of the call's transcript; ``--json`` prints exactly these fields."""

    turn: int
    caller_said: str | None
    recognised: str
    intent: str
    confidence: float
    language: str
    reply: str
    tools: list[str] = field(default_factory=list)
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    reply_audio: str | None = None
    ended: bool = False


def read_wav_pcm(path: Path) -> np.ndarray:
    """A WAV file as 16 kHz mono int16, whatever its rate and channel count (PCM 8/16/32-bit)."""
    try:
        with wave.open(str(path), "rb") as handle:
            width, channels, rate = handle.getsampwidth(), handle.getnchannels(), handle.getframerate()
            raw = handle.readframes(handle.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        raise CallError(f"--audio {path}: not a readable PCM WAV file ({exc})") from None
    if width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.int32)
    elif width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128) << 8
    elif width == 4:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.int64) >> 16
    else:
        raise CallError(f"--audio {path}: {8 * width}-bit samples are not supported (use 16-bit PCM)")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    pcm = np.clip(samples, -32768, 32767).astype(np.int16)
    return resample(pcm, rate, SAMPLE_RATE)


def write_wav(path: Path, pcm: bytes, sample_rate: int = SAMPLE_RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(pcm)


async def caller_audio(text: str, spec: HotelLineSpec) -> np.ndarray:
    """The simulated caller saying ``text`` in its language (guessed, else the line's first)."""
    language = guess_language(text) or first_language(spec)
    options = EspeakOptions(language=language, voice=CALLER_VOICES[base_language(language)], words_per_minute=CALLER_WPM)
    return await synthesize_pcm(text, options)


def _use_providers() -> bool:
    """Explicit VOICEHIVE_CALL_ENGINES wins; otherwise providers when all three are configured."""
    choice = os.environ.get(ENV_ENGINES, "").strip().lower()
    if choice in ("local", "providers"):
        return choice == "providers"
    if choice:
        raise CallError(f"{ENV_ENGINES} must be 'local' or 'providers', not {choice!r}")
    from voicehive import contract

    needed = (contract.ENV_RIVA_SERVER, contract.ENV_AZURE_OPENAI_API_KEY, contract.ENV_ELEVEN_API_KEY)
    return all(os.environ.get(name) for name in needed)


def build_models(spec: HotelLineSpec) -> Any:
    """Provider plugins when asked for (and configured), else the embedded local engines."""
    from .session import Models, ProviderEndpoints, provider_models

    if _use_providers():
        return provider_models(spec, ProviderEndpoints.from_env(spec))
    from .engines import local_models

    if base_language(spec.asr_language) != "en":
        # Say it rather than let a German caller be transcribed as English nonsense silently.
        print(
            f"warning: the local speech recogniser understands English only; this line's ASR language is "
            f"{spec.asr_language}, so callers are transcribed with the English model. Set "
            "VOICEHIVE_RIVA_SERVER, AZURE_OPENAI_API_KEY and ELEVEN_API_KEY to use the providers.",
            file=sys.stderr,
        )
    local = local_models(spec)
    local.stt.prewarm()
    return Models(stt=local.stt, llm=local.llm, tts=local.tts)


class _CallObserver:
    """Collects session events into per-turn facts (monotonic times)."""

    def __init__(self, session: Any) -> None:
        self.finals: list[tuple[float, str, str]] = []
        self.replies: list[tuple[float, str, dict[str, Any]]] = []
        self.tools: list[tuple[float, str]] = []
        self.states: list[tuple[float, str]] = []
        self.closed = asyncio.Event()
        self.changed = asyncio.Event()
        session.on("user_input_transcribed", self._transcribed)
        session.on("conversation_item_added", self._item)
        session.on("function_tools_executed", self._tools)
        session.on("agent_state_changed", self._state)
        session.on("close", self._closed)

    def _closed(self, _ev: Any) -> None:
        self.closed.set()
        self.changed.set()

    def _transcribed(self, ev: Any) -> None:
        if ev.is_final and ev.transcript.strip():
            self.finals.append((time.monotonic(), ev.transcript.strip(), str(ev.language or "")))
            self.changed.set()

    def _item(self, ev: Any) -> None:
        item = ev.item
        if getattr(item, "type", None) == "message" and item.role == "assistant" and item.text_content:
            self.replies.append((time.monotonic(), item.text_content, dict(item.metrics or {})))
            self.changed.set()

    def _tools(self, ev: Any) -> None:
        for call in ev.function_calls:
            self.tools.append((time.monotonic(), call.name))
        self.changed.set()

    def _state(self, ev: Any) -> None:
        self.states.append((time.monotonic(), str(ev.new_state)))
        self.changed.set()

    def state(self) -> str:
        return self.states[-1][1] if self.states else "initializing"


async def _wait(observer: _CallObserver, predicate: Any, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        observer.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(observer.changed.wait(), timeout=min(remaining, 0.1))
    return True


def _ms(later: float | None, earlier: float | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round((later - earlier) * 1000, 1)


async def simulate_call(
    spec: HotelLineSpec,
    utterances: list[tuple[str | None, np.ndarray]],
    out_dir: Path | None = None,
    *,
    models: Any = None,
    on_turn: Any = None,
    line: str = "cli",
) -> list[TurnReport]:
    """Run the call; ``utterances`` are (text said or None for a recording, 16 kHz int16 PCM).

    With ``spec.staffDelivery`` and VOICEHIVE_REDIS_URL set, requests go to the line's staff
    channels as from a pod, and the call returns once they are delivered (voicehive_worker.call_staff).
    """
    from livekit.agents.utils import http_context

    from .call_staff import staff_for_call

    # the provider plugins need an HTTP session bound to the context when there is no job worker
    async with http_context.open(), staff_for_call(spec, os.environ, line) as wrap:
        return await _simulate_call(spec, utterances, out_dir, models=models, on_turn=on_turn, wrap=wrap)


async def _simulate_call(
    spec: HotelLineSpec,
    utterances: list[tuple[str | None, np.ndarray]],
    out_dir: Path | None,
    *,
    models: Any,
    on_turn: Any,
    wrap: Any,
) -> list[TurnReport]:
    from .agent import LocalCallActions
    from .audio_io import AgentAudioSink, CallerAudioInput
    from .backoffice import build_pms
    from .session import create_agent, create_session, load_vad, start_session

    models = models or build_models(spec)
    session = create_session(spec, models, vad=load_vad())
    actions = LocalCallActions()
    # spec.pms: Mews/Apaleo as in the pod; wrap: requests also to the line's staff channels
    agent = create_agent(spec, wrap(actions), pms=build_pms(spec, os.environ))
    caller = CallerAudioInput()
    sink = AgentAudioSink()
    observer = _CallObserver(session)
    reports: list[TurnReport] = []
    await start_session(session, agent, audio_input=caller, audio_output=sink)
    try:
        # turn 0: the greeting, spoken before the caller says anything
        # (the transcript item can land just after the audio finished: wait for both)
        await _wait(
            observer,
            lambda: bool(sink.segments) and sink.segments[0].finished_at is not None and bool(observer.replies),
            GREETING_TIMEOUT_S,
        )
        greeting_text = observer.replies[0][1] if observer.replies else ""
        report = TurnReport(0, None, "", "greeting", 1.0, agent.language, greeting_text)
        report.reply_audio = _save(out_dir, 0, sink.segments[:1])
        _emit(reports, report, on_turn)
        for index, (said, pcm) in enumerate(utterances, start=1):
            if observer.closed.is_set():
                break
            n_finals, n_replies, n_tools, n_segments = len(observer.finals), len(observer.replies), len(observer.tools), len(sink.segments)
            audio = np.concatenate([np.zeros(int(LEAD_SILENCE_S * SAMPLE_RATE), dtype=np.int16), pcm]).tobytes()
            utt = caller.say(audio, label=f"turn-{index}")

            def reply_done(n_seg: int = n_segments, n_rep: int = n_replies) -> bool:
                if observer.closed.is_set():
                    return True
                new_segments = sink.segments[n_seg:]
                return (
                    caller.idle
                    and len(observer.replies) > n_rep
                    and bool(new_segments)
                    and all(s.finished_at is not None for s in new_segments)
                    and observer.state() in ("listening", "idle")
                )

            await _wait(observer, reply_done, TURN_TIMEOUT_S + len(audio) / 2 / SAMPLE_RATE)
            # give a tool's follow-up (transfer, goodbye) a moment to start speaking
            seen = len(sink.segments)
            await _wait(observer, lambda seen=seen: observer.closed.is_set() or len(sink.segments) > seen, 0.6)
            await _wait(observer, lambda n=n_segments: all(s.finished_at is not None for s in sink.segments[n:]), TURN_TIMEOUT_S)
            marks = (n_finals, n_replies, n_tools, n_segments)
            report, segments = _turn_report(index, said, utt, marks, observer, sink, agent, actions)
            report.reply_audio = _save(out_dir, index, segments)
            _emit(reports, report, on_turn)
            if report.ended:
                break
    finally:
        caller.close()
        await session.aclose()
        await sink.aclose()
    return reports


def _turn_report(index: int, said: str | None, utt: Any, marks: tuple[int, int, int, int], observer: _CallObserver,
                 sink: Any, agent: Any, actions: Any) -> tuple[TurnReport, list[Any]]:
    """What one caller turn produced since ``marks`` (finals, replies, tools, audio segments seen
    before it), and the reply's audio segments."""
    n_finals, n_replies, n_tools, n_segments = marks
    recognised = " ".join(text for _, text, _ in observer.finals[n_finals:])
    language = agent.language  # the call's language after this turn (language.LanguageTracker)
    result = classify(recognised, language)
    replies = observer.replies[n_replies:]
    segments = sink.segments[n_segments:]
    metrics = replies[0][2] if replies else {}
    final_at = observer.finals[n_finals][0] if len(observer.finals) > n_finals else None
    first_audio = segments[0].first_frame_at if segments else None
    latency: dict[str, float | None] = {
        "asr_final": _ms(final_at, utt.last_voiced_at),
        "end_of_turn": _round_s(metrics.get("end_of_turn_delay")),
        "llm_ttft": _round_s(metrics.get("llm_node_ttft")),
        "tts_ttfb": _round_s(metrics.get("tts_node_ttfb")),
        "voice_to_voice": _ms(first_audio, utt.last_voiced_at),
    }
    report = TurnReport(
        turn=index,
        caller_said=said,
        recognised=recognised,
        intent=result.intent.value,
        confidence=result.confidence,
        language=str(language),
        reply=" ".join(text for _, text, _ in replies),
        tools=[name for _, name in observer.tools[n_tools:]],
        latency_ms=latency,
        ended=observer.closed.is_set() or actions.ended is not None,
    )
    return report, segments


def _round_s(seconds: Any) -> float | None:
    return round(float(seconds) * 1000, 1) if isinstance(seconds, int | float) else None


def _emit(reports: list[TurnReport], report: TurnReport, on_turn: Any) -> None:
    reports.append(report)
    if on_turn is not None:
        on_turn(report)


def _save(out_dir: Path | None, index: int, segments: list[Any]) -> str | None:
    if out_dir is None or not segments:
        return None
    path = out_dir / f"turn-{index:02d}-reply.wav"
    write_wav(path, b"".join(bytes(s.pcm) for s in segments))
    return str(path)


def _print_human(report: TurnReport) -> None:
    if report.turn == 0:
        print(f"[agent]  {report.reply}")
        return
    lat = report.latency_ms
    said = report.caller_said if report.caller_said is not None else "(audio file)"
    print(f"\n[turn {report.turn}]")
    print(f"  caller said : {said}")
    print(f"  recognised  : {report.recognised or '(nothing)'}")
    print(f"  intent      : {report.intent} ({report.confidence:.2f}, {report.language})")
    if report.tools:
        print(f"  tools       : {', '.join(report.tools)}")
    print(f"  reply       : {report.reply or '(none)'}")
    parts = ", ".join(f"{k} {v:.0f} ms" for k, v in lat.items() if v is not None)
    print(f"  latency     : {parts or 'n/a'}")
    if report.ended:
        print("  (call ended)")


def run_call(line_file: Path, says: list[str], audios: list[Path], out_dir: Path | None, as_json: bool) -> int:
    """The `voicehive call` command: 0 when every turn got a reply, 1 when not, 2 on bad input."""
    import logging

    from .call_staff import line_name
    from .entrypoint import load_line_spec

    logging.getLogger("livekit.agents").setLevel(logging.ERROR)
    try:
        spec = load_line_spec(line_file)
    except FileNotFoundError:
        print(f"error: --line {line_file}: no such file", file=sys.stderr)
        return 2
    except Exception as exc:  # pydantic / YAML errors: say which field
        print(f"error: --line {line_file}: {exc}", file=sys.stderr)
        return 2

    async def main() -> list[TurnReport]:
        utterances: list[tuple[str | None, np.ndarray]] = []
        for text in says:
            if not text.strip():
                raise CallError("--say needs some text")
            utterances.append((text, await caller_audio(text, spec)))
        for path in audios:
            if not path.is_file():
                raise CallError(f"--audio {path}: no such file")
            utterances.append((None, read_wav_pcm(path)))
        if not utterances:
            raise CallError("nothing to say: give at least one --say TEXT or --audio WAV")
        printer = (lambda r: print(json.dumps(asdict(r), ensure_ascii=False), flush=True)) if as_json else _print_human
        return await simulate_call(spec, utterances, out_dir, on_turn=printer, line=line_name(line_file, os.environ))

    try:
        reports = asyncio.run(main())
    except (CallError, EspeakNotInstalled, ValueError) as exc:  # ValueError: session.ProviderConfigError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    answered = [r for r in reports if r.turn > 0 and (r.reply or r.ended)]
    expected = len(says) + len(audios)
    return 0 if reports and (len(answered) == expected or (answered and answered[-1].ended)) else 1
