"""Upstream image providers: one module per wire protocol, the only code that speaks HTTP upstream.

`generate(client, target, request)` is the whole interface; `PROVIDERS` maps a protocol name to
the module's coroutine. See `base.py` for the contract.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from generation.engine.providers import generate_content, predict, sandbox
from generation.engine.providers.base import ProviderRequest, ProviderResult, Target

Provider = Callable[[Any, Target, ProviderRequest], Awaitable[ProviderResult]]

PROVIDERS: dict[str, Provider] = {
    "predict": predict.generate,
    "generate_content": generate_content.generate,
    "sandbox": sandbox.generate,
}


def provider_for(target: Target) -> Provider:
    """The coroutine function that serves this target: the sandbox for sandbox routes (whatever
    protocol they mimic), else the one for the target's wire protocol."""
    if target.kind == "sandbox":
        return sandbox.generate
    try:
        return PROVIDERS[target.protocol]
    except KeyError:
        raise ValueError(f"no provider for protocol {target.protocol!r}") from None
