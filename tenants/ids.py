"""Public, prefixed, time-sortable object ids (`org_…`, `key_…`, `gen_…`, `img_…`).

Format: `<prefix>_` + 26 Crockford base32 characters (48-bit millisecond timestamp + 80 random
bits, as in ULID), lower-cased. Sorting ids sorts by creation time, which cursor pagination uses;
the random part makes them unguessable. Integer primary keys never leave the database.
"""

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_public_id(prefix: str) -> str:
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{_encode(millis, 10)}{_encode(secrets.randbits(80), 16)}"


# Module-level defaults, so migrations can reference them by path.
def new_organization_id() -> str:
    return new_public_id("org")


def new_api_key_id() -> str:
    return new_public_id("key")


def new_invitation_id() -> str:
    return new_public_id("inv")
