"""Function-tool schemas built once per agent instead of on every LLM request.

WHY: livekit-agents 1.8 rebuilds each ``@function_tool``'s JSON schema (a pydantic model from
the signature and docstring, then its strict JSON schema) on every chat request: 15-40 ms for
the hotel's seven tools on a shared 2-core machine, between the caller's last word and the LLM
request. A schema only changes when the tool does, so the agent's ``llm_node`` hands the LLM
raw-schema stand-ins carrying the schema built once, exactly as the LLM would have built it.

The stand-ins only describe. The framework executes a tool call with the turn's own
ToolContext (the agent's real tools), never with the list the LLM node passed on, so argument
parsing (defaults, null sentinels, RunContext) stays the framework's; a stand-in that were
ever called raises instead of running a tool with unparsed arguments.
"""

from __future__ import annotations

from typing import Any, Literal

from livekit.agents import llm as lk_llm
from livekit.agents.llm.tool_context import RawFunctionTool, RawFunctionToolInfo

SchemaFormat = Literal["strict", "legacy", "names"]
"""OpenAI function schemas in strict or legacy form; "names": the model reads tool names only."""


def tool_schema_format(model: object) -> SchemaFormat | None:
    """How ``model`` describes function tools to its provider; None: another way (leave them be).

    An OpenAI-format LLM (the openai plugin, Azure included) formats them as strict or legacy
    OpenAI function schemas; livekit-agents 1.8 keeps that choice in private attributes
    (``_provider_fmt``, ``_strict_tool_schema``; the minor is pinned in pyproject). A model that
    reads only tool names says so with ``reads_tool_names_only`` (the hotel policy). A
    FallbackAdapter has one format when all its schema-reading models agree.
    """
    if getattr(model, "reads_tool_names_only", False) is True:
        return "names"
    if isinstance(model, lk_llm.FallbackAdapter):
        found = {tool_schema_format(m) for m in getattr(model, "_llm_instances", [None])} - {"names"}
        if not found:
            return "names"
        return found.pop() if len(found) == 1 else None
    strict = getattr(model, "_strict_tool_schema", None)
    if getattr(model, "_provider_fmt", None) == "openai" and isinstance(strict, bool):
        return "strict" if strict else "legacy"
    return None


def build_schema(tool: lk_llm.FunctionTool[Any, Any], fmt: Literal["strict", "legacy"]) -> dict[str, Any]:
    """The ``function`` part of the OpenAI tool schema the framework would send for ``tool``."""
    build = lk_llm.utils.build_strict_openai_schema if fmt == "strict" else lk_llm.utils.build_legacy_openai_schema
    schema: dict[str, Any] = build(tool)["function"]
    return schema


def _stand_in(tool: lk_llm.FunctionTool[Any, Any], schema: dict[str, Any]) -> RawFunctionTool[Any, Any]:
    name = tool.info.name

    async def never_called(raw_arguments: dict[str, object]) -> None:
        raise RuntimeError(f"{name}: a schema stand-in was called; the agent's own tool runs tool calls")

    info = RawFunctionToolInfo(
        name=name,
        raw_schema=schema,
        flags=tool.info.flags,
        on_duplicate=tool.info.on_duplicate,
        duplicate_scope=tool.info.duplicate_scope,
    )
    return RawFunctionTool(never_called, info)


class ToolSchemaCache:
    """One agent's tool schemas, per tool object and format; a new or changed tool is built anew.

    Entries are kept for every tool the agent offered (a handful): a turn that offers fewer
    tools (the framework leaves some out of ``on_enter``) does not cost a rebuild afterwards.
    """

    def __init__(self) -> None:
        self._built: dict[tuple[int, str], tuple[lk_llm.FunctionTool[Any, Any], RawFunctionTool[Any, Any]]] = {}
        self.builds = 0  # schemas built so far (a test reads it; a rebuild per request would show)

    def describe(self, tools: list[lk_llm.Tool], fmt: SchemaFormat | None) -> list[lk_llm.Tool]:
        """``tools`` with each function tool replaced by its stand-in (a new list; ``tools`` is kept)."""
        if fmt not in ("strict", "legacy"):
            return list(tools)
        out: list[lk_llm.Tool] = []
        for tool in tools:
            if not isinstance(tool, lk_llm.FunctionTool):
                out.append(tool)
                continue
            key = (id(tool), fmt)
            entry = self._built.get(key)
            if entry is None or entry[0] is not tool:
                entry = (tool, _stand_in(tool, build_schema(tool, fmt)))
                self._built[key] = entry  # holds the tool, so its id is not reused while cached
                self.builds += 1
            out.append(entry[1])
        return out
