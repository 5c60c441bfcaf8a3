"""Upstream image providers: one module per wire protocol, the only code that speaks HTTP upstream.

`generate(client, target, request)` is the whole interface; `PROVIDERS` maps a protocol name to
the module's coroutine. See `base.py` for the contract.
"""
