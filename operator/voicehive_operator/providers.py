"""Provider checks with each provider's official client: is the configured thing really there?

WHY: a line whose Riva model, Azure deployment or ElevenLabs voice does not exist would answer
calls with silence. Each check returns an :class:`~voicehive_operator.conditions.Observation`
with plain words (never a key, never a raw response body) for AsrReady, LlmReady, TtsReady.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from pathlib import Path

import grpc
import httpx
import openai
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError as ElevenApiError
from riva.client.proto import riva_asr_pb2 as rasr
from riva.client.proto import riva_asr_pb2_grpc

from voicehive_operator import conditions, policy
from voicehive_operator.conditions import Observation


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(ca_file)
    return context


# --------------------------------------------------------------------------- Riva


def _riva_channel(address: str, use_tls: bool, ca_file: str | None, ca_pem: str | None) -> grpc.Channel:
    """Plaintext, or TLS trusting ``ca_pem`` (a managed pool's CA), else ``ca_file``, else the
    system's roots; the host name checked is the address's (a pool's Service DNS name)."""
    if not use_tls:
        return grpc.insecure_channel(address)
    roots = ca_pem.encode() if ca_pem else (Path(ca_file).read_bytes() if ca_file else None)
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots))


def _riva_models(address: str, use_tls: bool, ca_file: str | None, ca_pem: str | None, timeout_s: float) -> list[str]:
    with _riva_channel(address, use_tls, ca_file, ca_pem) as channel:
        stub = riva_asr_pb2_grpc.RivaSpeechRecognitionStub(channel)  # type: ignore[no-untyped-call]
        request = rasr.RivaSpeechRecognitionConfigRequest()  # type: ignore[attr-defined]
        response = stub.GetRivaSpeechRecognitionConfig(request, timeout=timeout_s)
        return [cfg.model_name for cfg in response.model_config]


async def check_riva(address: str, model: str, *, use_tls: bool, ca_file: str | None, timeout_s: float,
                     ca_pem: str | None = None) -> Observation:
    """Does the Riva at ``address`` serve ``model``? ``ca_pem``: the CA of a managed pool's TLS."""
    try:
        served = await asyncio.to_thread(_riva_models, address, use_tls, ca_file, ca_pem, timeout_s)
    except OSError as exc:
        return Observation(conditions.ASR, False, "RivaCaUnreadable",
                           f"The CA file for Riva at {address} cannot be read ({exc.strerror}).")
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return Observation(conditions.ASR, False, "RivaTimeout", f"Riva at {address} did not answer in {timeout_s:g} s.")
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return Observation(conditions.ASR, False, "RivaNoAsr", f"The server at {address} does not serve Riva ASR.")
        over = " over TLS" if use_tls else ""
        return Observation(
            conditions.ASR, False, "RivaUnreachable",
            f"Riva at {address} cannot be reached{over} ({getattr(code, 'name', code)}).",
        )
    if model not in served:
        listed = ", ".join(sorted(served)[:5]) or "none"
        return Observation(
            conditions.ASR, False, "RivaModelMissing", f"Riva at {address} does not serve the model {model} (it serves: {listed})."
        )
    return Observation(conditions.ASR, True, "RivaModelServed", f"Riva at {address} serves {model}.")


# --------------------------------------------------------------------------- Azure OpenAI


async def check_azure_openai(
    *,
    endpoint: str,
    deployment: str,
    api_version: str,
    api_key: str,
    eu_hosts: Sequence[str],
    ca_file: str | None,
    timeout_s: float,
) -> Observation:
    """A one-token chat call: proves the deployment exists, the key works, and where it runs."""
    host = policy.endpoint_host(endpoint)
    # openai ships its own httpx fork (httpx2); its default client takes the TLS context.
    http = openai.DefaultAsyncHttpxClient(verify=_ssl_context(ca_file), timeout=timeout_s)
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=endpoint, api_key=api_key, api_version=api_version, http_client=http, max_retries=0
    )
    try:
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model=deployment, messages=[{"role": "user", "content": "ping"}], max_tokens=1
            )
            headers = raw.headers
        except openai.NotFoundError as exc:
            if _error_code(exc) == "DeploymentNotFound" or "deployment" in str(exc).lower():
                return Observation(
                    conditions.LLM,
                    False,
                    "DeploymentNotFound",
                    f"Azure OpenAI at {host} has no deployment named {deployment}; create it or fix llm.deployment.",
                )
            return Observation(
                conditions.LLM, False, "EndpointNotFound", f"Azure OpenAI at {host} answered 404: check llm.endpoint."
            )
        except (openai.AuthenticationError, openai.PermissionDeniedError):
            return Observation(
                conditions.LLM,
                False,
                "KeyRejected",
                f"Azure OpenAI at {host} refused the API key from llm.apiKeySecretRef.",
            )
        except openai.BadRequestError as exc:
            # The deployment resolved (a 400 is about the request); still need the region.
            headers = exc.response.headers
        except openai.RateLimitError as exc:
            headers = exc.response.headers  # exists and answers; busy right now
        except (openai.APIConnectionError, openai.APITimeoutError):
            return Observation(conditions.LLM, False, "LlmUnreachable", f"Azure OpenAI at {host} cannot be reached.")
        except openai.APIStatusError as exc:
            return Observation(
                conditions.LLM, False, "LlmError", f"Azure OpenAI at {host} answered HTTP {exc.status_code}."
            )
    finally:
        await client.close()
    region = headers.get("x-ms-region")
    if region:
        if not policy.azure_region_is_eu(region):
            return Observation(
                conditions.LLM,
                False,
                "LlmOutsideEU",
                f"Azure OpenAI at {host} runs in {region}, outside the EU; use a resource in an EU region.",
            )
        return Observation(conditions.LLM, True, "DeploymentReady", f"Deployment {deployment} answers from {region} (EU).")
    if policy.host_matches(host, tuple(eu_hosts)):
        return Observation(
            conditions.LLM, True, "DeploymentReady", f"Deployment {deployment} answers; {host} is listed as an EU endpoint."
        )
    return Observation(
        conditions.LLM,
        False,
        "LlmRegionUnknown",
        f"Azure OpenAI at {host} did not report its region, so EU residency cannot be confirmed; the operator "
        "administrator can list the host in VOICEHIVE_OPERATOR_LLM_EU_HOSTS.",
    )


def _error_code(exc: openai.APIStatusError) -> str | None:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            code = inner.get("code")
            return str(code) if code is not None else None
    return None


# --------------------------------------------------------------------------- ElevenLabs


async def check_elevenlabs(
    *, base_url: str, voice_id: str, model_id: str, api_key: str, ca_file: str | None, timeout_s: float
) -> Observation:
    host = policy.endpoint_host(base_url)
    async with httpx.AsyncClient(verify=_ssl_context(ca_file), timeout=timeout_s) as http:
        # The SDK adds /v1 itself; the worker takes the endpoint with or without it (one rule for both).
        root = base_url.rstrip("/").removesuffix("/v1")
        client = AsyncElevenLabs(api_key=api_key, base_url=root, httpx_client=http)
        try:
            await client.voices.get(voice_id)
        except ElevenApiError as exc:
            return _eleven_failure(exc, host, f"voice {voice_id}", "tts.voiceId")
        except (httpx.HTTPError, OSError):
            return Observation(conditions.TTS, False, "TtsUnreachable", f"ElevenLabs at {host} cannot be reached.")
        try:
            models = await client.models.list()
        except ElevenApiError as exc:
            return _eleven_failure(exc, host, "model list", "tts.apiKeySecretRef")
        except (httpx.HTTPError, OSError):
            return Observation(conditions.TTS, False, "TtsUnreachable", f"ElevenLabs at {host} cannot be reached.")
    ids = {m.model_id for m in models}
    if model_id not in ids:
        return Observation(
            conditions.TTS, False, "ModelNotFound", f"ElevenLabs at {host} has no model {model_id}; fix tts.modelId."
        )
    return Observation(conditions.TTS, True, "VoiceReady", f"ElevenLabs voice {voice_id} and model {model_id} exist.")


def _eleven_failure(exc: ElevenApiError, host: str, what: str, field: str) -> Observation:
    if exc.status_code in (401, 403):
        return Observation(
            conditions.TTS, False, "KeyRejected", f"ElevenLabs at {host} refused the API key from tts.apiKeySecretRef."
        )
    if exc.status_code in (404, 400, 422):
        return Observation(conditions.TTS, False, "VoiceNotFound", f"ElevenLabs at {host} has no {what}; fix {field}.")
    return Observation(conditions.TTS, False, "TtsError", f"ElevenLabs at {host} answered HTTP {exc.status_code}.")
