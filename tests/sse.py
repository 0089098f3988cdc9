"""Reading SSE bodies in tests."""
from __future__ import annotations

import json
from typing import Any


def parse_sse(body: str | bytes) -> list[dict[str, Any]]:
    """Frames as dicts {id, event, data}; comments (keep-alives) are skipped."""
    if isinstance(body, bytes):
        body = body.decode()
    frames = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        frame: dict[str, Any] = {}
        data_lines = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data_lines.append(value)
            else:
                frame[name] = value
        if data_lines:
            raw = "\n".join(data_lines)
            frame["data"] = json.loads(raw) if raw else None
        if frame:
            frames.append(frame)
    return frames


def read_all(response: Any) -> bytes:
    """Consume a streaming response (async or sync iterator) to its end."""
    from asgiref.sync import async_to_sync

    if getattr(response, "is_async", False):
        async def collect() -> list[bytes]:
            return [chunk async for chunk in response.streaming_content]

        return b"".join(async_to_sync(collect)())
    return b"".join(response.streaming_content)


def streamed(response: Any) -> list[dict[str, Any]]:
    return parse_sse(read_all(response))


def types(frames: list[dict[str, Any]]) -> list[str]:
    return [f["event"] for f in frames]
