"""Every JSON body the API reads goes through `json_parse`: the DRF parser below and the batch JSONL
reader alike, so one set of rules holds everywhere.

- orjson parses without Python recursion, so a deeply nested body is an ordinary 400 instead of a
  RecursionError; nesting deeper than JSON_MAX_DEPTH is refused too, so nothing later (our own
  walkers, `json.dumps` into a JSONField) recurses on it either;
- no string, key or value, may hold a NUL (PostgreSQL cannot store one in text or jsonb) or a lone
  surrogate (not encodable as UTF-8; orjson refuses escaped ones while parsing).
"""

from __future__ import annotations

import orjson
from django.conf import settings
from rest_framework.parsers import BaseParser

from tenants.errors import InvalidRequest


def _param(path: list[str | int]) -> str | None:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or None


def json_check(value: object, *, max_depth: int | None = None) -> None:
    """Refuse nesting deeper than `max_depth` and NUL characters, naming the offending path."""
    max_depth = settings.JSON_MAX_DEPTH if max_depth is None else max_depth
    stack: list[tuple[object, list[str | int]]] = [(value, [])]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise InvalidRequest("Strings must not contain NUL characters.", param=_param(path))
            continue
        if not isinstance(item, dict | list):
            continue
        if len(path) >= max_depth:
            raise InvalidRequest(
                f"The JSON body is nested more than {max_depth} levels deep.", param=_param(path)
            )
        if isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    raise InvalidRequest("Object keys must not contain NUL characters.", param=_param(path))
                stack.append((child, [*path, key]))
        else:
            stack.extend((child, [*path, index]) for index, child in enumerate(item))


def json_parse(data: bytes | str, *, param: str | None = None) -> object:
    """Parse and check one JSON document; any defect is InvalidRequest (400), never another error."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Malformed JSON: {exc}", param=param) from None
    try:
        json_check(value)
    except InvalidRequest as exc:
        if param is not None:
            exc.param = f"{param}: {exc.param}" if exc.param else param
        raise
    return value


class JsonParser(BaseParser):
    """DRF's JSON parser with the rules above (UTF-8 only, as RFC 8259 requires)."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        return json_parse(stream.read() if stream is not None else b"")
