"""Reading a request body under a size limit, and OpenAPI schemas for bodies we decode ourselves."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from online.errors import PayloadTooLarge


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The whole body, or PayloadTooLarge as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def array_body_schema(schema: dict[str, Any], *, max_items: int) -> dict[str, Any]:
    """Turn msgspec's `list[Struct]` schema into an inline OpenAPI request body."""
    defs = schema.get("$defs", {})
    item_ref = schema["items"].get("$ref", "")
    item_schema = defs.get(item_ref.rsplit("/", 1)[-1], schema["items"])
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": item_schema, "maxItems": max_items}
            }
        },
    }
