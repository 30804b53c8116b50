"""Minimal MCP test server (PyPI `mcp` 2.x, MCPServer) over streamable HTTP.

Run:  /tmp/mcp-venv/bin/python /tmp/mcp-py/server.py --port 8931
URL:  http://127.0.0.1:8931/mcp
"""

import argparse
import asyncio
import base64
import logging
from typing import Any

from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

log = logging.getLogger("mcp-test-server")

# Every legacy (initialize + Mcp-Session-Id) connection that has sent us anything.
# MCPServer has no "broadcast to all sessions" API. `ctx.session` is a per-request
# proxy; the long-lived per-client object is its Connection (private attribute
# `_connection` in mcp 2.3.0), whose send_tool_list_changed() writes to that
# client's standalone GET SSE stream.
_connections: dict[str, Any] = {}


async def remember_session(ctx, call_next):
    """ServerMiddleware: runs for every inbound request/notification."""
    conn = getattr(ctx.session, "_connection", None)
    sid = getattr(conn, "session_id", None)
    if sid:
        _connections[sid] = conn
    return await call_next(ctx)


mcp = MCPServer(name="py-test-server", version="0.1.0", middleware=[remember_session])


@mcp.tool()
def echo(message: str) -> str:
    """Echo the message back as text."""
    return message


@mcp.tool()
async def slow(seconds: float = 2.0) -> str:
    """Sleep for `seconds`, then return."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}s"


@mcp.tool()
def fail(reason: str = "boom") -> str:
    """Always fails: the result has isError=true."""
    raise ToolError(f"tool failed: {reason}")


class Weather(BaseModel):
    city: str
    temperature_c: float
    conditions: list[str]


@mcp.tool()
def weather(city: str) -> Weather:
    """Returns structured JSON (structuredContent) plus a text rendering."""
    return Weather(city=city, temperature_c=21.5, conditions=["sunny", "windy"])


# 1x1 red PNG
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


@mcp.tool()
def tiny_image() -> Image:
    """Returns a 1x1 PNG image content block."""
    return Image(data=_PNG, format="png")


@mcp.tool()
def headers(ctx: Context) -> dict[str, str]:
    """Returns the HTTP request headers this call arrived with."""
    return dict(ctx.headers or {})


async def broadcast_tools_changed(ctx: Context | None) -> int:
    """Send notifications/tools/list_changed to every known session."""
    sent = 0
    for sid, conn in list(_connections.items()):
        try:
            await conn.send_tool_list_changed()
            sent += 1
        except Exception as exc:  # closed session etc.
            log.info("list_changed to session %s failed: %r", sid, exc)
            _connections.pop(sid, None)
    # 2026-07-28 clients use subscriptions/listen instead of a session stream.
    if ctx is not None:
        try:
            await ctx.notify_tools_changed()
        except Exception as exc:
            log.info("notify_tools_changed failed: %r", exc)
    return sent


@mcp.tool()
async def add_tool(name: str, ctx: Context) -> str:
    """Register a new tool `name` at runtime (it echoes `text`) and notify all clients."""

    def dynamic(text: str = "") -> str:
        return f"{name}: {text}"

    mcp.add_tool(dynamic, name=name, description=f"dynamically added tool {name}")
    n = await broadcast_tools_changed(ctx)
    return f"added {name}; notified {n} session(s)"


@mcp.tool()
async def remove_tool(name: str, ctx: Context) -> str:
    """Remove tool `name` and notify all clients."""
    mcp.remove_tool(name)
    n = await broadcast_tools_changed(ctx)
    return f"removed {name}; notified {n} session(s)"


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8931)
    ap.add_argument("--path", default="/mcp")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    mcp.run("streamable-http", host=args.host, port=args.port, streamable_http_path=args.path)
