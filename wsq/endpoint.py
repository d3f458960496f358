"""The ASGI middleware that serves the wsq.v1 WebSocket in front of the Starlette app (one
``wsq.gateway.Peer`` per socket), and hands every other request to the app."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from wsq.gateway import Gateway, Peer


class WebSocketEndpoint:
    """ASGI middleware that serves the wsq.v1 WebSocket at ``path`` itself and hands everything
    else to the application behind it."""

    def __init__(self, app: ASGIApp, gateway: Gateway, path: str = "/ws") -> None:
        self.app = app
        self.gateway = gateway
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            if path == self.path:
                await Peer(self.gateway, scope, receive, send).run()
                return
        await self.app(scope, receive, send)
