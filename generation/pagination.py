"""Cursor pagination shared by the API's list endpoints: `?limit=` and `?cursor=` (the public id of
the last item of the previous page), answered as {"object": "list", "data", "has_more",
"next_cursor"}."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from django.db.models import QuerySet
from rest_framework.response import Response

from tenants.errors import InvalidRequest


class _HasPublicId(Protocol):
    public_id: str


T = TypeVar("T", bound=_HasPublicId)


def page_limit(request, *, default: int = 20, maximum: int = 100) -> int:
    try:
        limit = int(request.query_params.get("limit", default))
    except ValueError:
        raise InvalidRequest("limit must be an integer.", param="limit") from None
    if not 1 <= limit <= maximum:
        raise InvalidRequest(f"limit must be between 1 and {maximum}.", param="limit")
    return limit


def page_cursor(request, *, prefix: str, what: str = "an id") -> str | None:
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and not re.fullmatch(rf"{prefix}_[0-9a-z]{{26}}", cursor):
        raise InvalidRequest(f"cursor must be {what} from a previous page.", param="cursor")
    return cursor


def page_index_cursor(request) -> int:
    """A cursor that is a position (batch items): ASCII digits of sane length only. `isdigit()`
    alone passes "²" and 5,000-digit numbers, which then fail in int() or overflow the database."""
    raw = request.query_params.get("cursor") or "0"
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9):
        raise InvalidRequest("cursor must be next_cursor from a previous page.", param="cursor")
    return int(raw)


def page_response(items: Sequence[T], *, has_more: bool, render: Callable[[T], dict]) -> Response:
    return Response(
        {
            "object": "list",
            "data": [render(item) for item in items],
            "has_more": has_more,
            "next_cursor": items[-1].public_id if has_more else None,
        }
    )


def newest_first_page(queryset: QuerySet, *, cursor: str | None, limit: int) -> tuple[list, bool]:
    """One page, newest first (public ids sort by creation time), and whether more follow."""
    if cursor:
        queryset = queryset.filter(public_id__lt=cursor)
    page = list(queryset.order_by("-public_id")[: limit + 1])
    return page[:limit], len(page) > limit
