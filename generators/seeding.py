"""Seeds derived from content, so generation is reproducible whatever the order or batching."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def content_seed(seed: int, content: Any) -> int:
    """A 63-bit seed from the run seed and ``content`` (stable across processes and machines)."""
    digest = hashlib.sha256(json.dumps([seed, content], sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def messages_order_key(row: dict[str, Any], salt: str) -> str:
    """A fixed hash of ``row``'s messages (salted): sorting by it gives an order that no file, id or
    generation order decides."""
    from charforge.io import canonical_json

    return hashlib.sha256((salt + canonical_json(row["messages"])).encode()).hexdigest()


def take_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` in a fixed hash order of their messages: whatever order they were written, stored or
    generated in, the first N are a sample that does not lean to the seed set or to the end of a
    generation run. (Salted apart from the held-out order: the seeds left after it are not its tail.)"""
    return sorted(rows, key=lambda row: messages_order_key(row, "take:"))
