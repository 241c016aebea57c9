"""EU data-residency rules the operator enforces even when the CRD schema let a value through.

WHY twice: a CRD installed from an older release, a schema-less test API server, or a field
added later may admit a value the current models forbid. The operator is the last gate before
phone audio leaves for a provider, so it refuses with a plain-words condition.

Rule for Azure OpenAI endpoints (documented in docs/operator.md): an Azure resource's host name
(``<resource>.openai.azure.com``) does not say where it runs. So the operator

1. accepts only hosts that match its allow-list of host patterns (default: Azure OpenAI hosts,
   ``VOICEHIVE_OPERATOR_LLM_ALLOWED_HOSTS``), and
2. reads the region Azure reports on every response (``x-ms-region``, e.g. "Sweden Central")
   during the provider check and requires an EU region; a host that reports no region is
   accepted only when the platform engineer listed it as EU (``VOICEHIVE_OPERATOR_LLM_EU_HOSTS``).
"""

from __future__ import annotations

import fnmatch
from urllib.parse import urlsplit

from voicehive.api.models import EURegion

# Azure regions inside the EU, by their normalised display name and programmatic name. Wider
# than EURegion (which lists the regions we schedule pods in): an LLM may live in any EU region.
AZURE_EU_REGIONS: frozenset[str] = frozenset(
    {
        "westeurope",
        "northeurope",
        "germanywestcentral",
        "germanynorth",
        "francecentral",
        "francesouth",
        "swedencentral",
        "swedensouth",
        "italynorth",
        "polandcentral",
        "spaincentral",
        "austriaeast",
        "belgiumcentral",
        "denmarkeast",
        "finlandcentral",
        "greececentral",
    }
)


def region_is_eu(region: str) -> bool:
    return region in {r.value for r in EURegion}


def normalise_azure_region(reported: str) -> str:
    """``"Sweden Central"`` -> ``"swedencentral"``."""
    return "".join(ch for ch in reported.lower() if ch.isalnum())


def azure_region_is_eu(reported: str) -> bool:
    return normalise_azure_region(reported) in AZURE_EU_REGIONS


def endpoint_host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in patterns)


def llm_endpoint_problem(url: str, allowed_hosts: tuple[str, ...]) -> str | None:
    """Plain-words reason the LLM endpoint is refused before any request, or ``None``."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        return "llm.endpoint must use https:// so prompts are encrypted in transit."
    host = (parts.hostname or "").lower()
    if not host:
        return "llm.endpoint has no host name."
    if not host_matches(host, allowed_hosts):
        return (
            f"llm.endpoint host {host} is not an approved EU Azure OpenAI endpoint for this operator "
            f"(allowed: {', '.join(allowed_hosts) or 'none'})."
        )
    return None


# --------------------------------------------------------------------------- allow-lists
# WHY: whoever may write a HotelLine must not choose the code that runs with the line's keys, nor
# a host the operator (provider checks) or the workers send an API key or audio to. The operator's
# configuration (chart values) lists what a line may choose; anything else refuses the whole line
# before any Pod is created or any request leaves the operator.


def image_problem(image: str, allowed: tuple[str, ...]) -> str | None:
    """Plain-words reason a worker image is refused, or ``None`` (patterns are shell globs)."""
    if any(fnmatch.fnmatchcase(image, pattern) for pattern in allowed):
        return None
    return (
        f"workers.image {image} is not one of the worker images this operator allows "
        f"({', '.join(allowed) or 'none'}); ask the platform team to add it."
    )


def https_endpoint_problem(field: str, url: str, allowed_hosts: tuple[str, ...]) -> str | None:
    """An https URL whose host is on ``allowed_hosts``, or the plain-words reason it is refused."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        return f"{field} must use https:// so keys and audio are encrypted in transit."
    host = (parts.hostname or "").lower()
    if not host:
        return f"{field} has no host name."
    if parts.username or parts.password:
        return f"{field} must not carry credentials in the URL; keys come from a Secret reference."
    if not host_matches(host, allowed_hosts):
        return (
            f"{field} host {host} is not an endpoint this operator allows "
            f"(allowed: {', '.join(allowed_hosts) or 'none'})."
        )
    return None


def address_problem(field: str, address: str, allowed_hosts: tuple[str, ...]) -> str | None:
    """A ``host:port`` address whose host is on ``allowed_hosts``, or why it is refused."""
    host = address.rsplit(":", 1)[0].lower()
    if host_matches(host, allowed_hosts):
        return None
    return (
        f"{field} host {host} is not an endpoint this operator allows "
        f"(allowed: {', '.join(allowed_hosts) or 'none: use the operator-managed Riva'})."
    )
