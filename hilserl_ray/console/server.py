"""The console's HTTP + websocket server (aiohttp) on a thread of its own with its own event loop.

It runs inside the process that steps the env (the robot actor, `record`, `evaluate`), so it
reads the newest frames from memory and feeds key presses straight into the intervention source:
no Ray round trip on either path. Every request needs the run's random token (`?token=`), else
403. Websocket protocol: the server sends JSON text (`hello` once, then `status` at `fps`, `ack`
per key, `applied` and `cue` as they happen) and binary frames (one byte = the stream's index in
`hello.streams`, then a JPEG); the page sends `{"type": "key", "key": NAME, "down": bool, "id": n}`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from importlib import resources

import cv2
import numpy as np
from aiohttp import WSMsgType, web

from hilserl_ray.console.controls import WebControls
from hilserl_ray.console.view import LiveView
from hilserl_ray.errors import UserError

log = logging.getLogger(__name__)
STATIC = resources.files("hilserl_ray.console") / "static"
STATIC_FILES = {"console.js": "text/javascript", "console.css": "text/css"}


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a frame of shape {rgb.shape}")
    return buf.tobytes()


class ConsoleServer:
    def __init__(
        self,
        view: LiveView,
        controls: WebControls,
        token: str,
        hello: dict,
        host: str = "127.0.0.1",
        port: int = 0,
        fps: float = 5.0,
        jpeg_quality: int = 80,
    ):
        self.view, self.controls, self.token = view, controls, token
        self.hello = {"type": "hello", "streams": view.streams, **hello}
        self.host, self.port, self.fps, self.quality = host, port, fps, jpeg_quality
        self.loop: asyncio.AbstractEventLoop | None = None
        self._clients: set[asyncio.Queue] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self._jpeg: dict[str, tuple[int, bytes]] = {}  # stream -> (frame seq, bytes): encode once
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        view.subscribe(self._push_threadsafe)

    # ----------------------------------------------------------------------- lifecycle
    def start(self, timeout_s: float = 30.0) -> int:
        """Bind and serve on a daemon thread; returns the bound port (a free one for port 0)."""
        started = threading.Event()
        failure: list[BaseException] = []

        def serve():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            try:
                loop.run_until_complete(self._bind())
            except BaseException as e:  # port taken, bad host: reported by start()
                failure.append(e)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name="console-server", daemon=True)
        self._thread.start()
        if not started.wait(timeout_s):
            raise RuntimeError(f"console: the server did not start within {timeout_s:.0f} s")
        if failure:
            raise UserError(
                f"the console cannot listen on {self.host}:{self.port} ({failure[0]})",
                where="console.host / console.port",
                fix="console.port=0 picks a free port; console.host is an address of this machine "
                "(or console.enabled=false)",
            ) from failure[0]
        return self.port

    async def _bind(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/favicon.ico", self._no_icon)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def close(self, timeout_s: float = 5.0) -> None:
        loop = self.loop
        if loop is None or not loop.is_running():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout_s)
        except Exception as e:  # a hung client must not block a robot's safe stop
            log.warning("console: unclean shutdown (%s)", e)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout_s)

    async def _shutdown(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"the run stopped")
        if self._runner is not None:
            await self._runner.cleanup()

    # -------------------------------------------------------------------------- routes
    def _check(self, request: web.Request) -> None:
        if not hmac.compare_digest(request.query.get("token", ""), self.token):
            raise web.HTTPForbidden(text="console: wrong or missing token; open the URL the run printed\n")

    async def _index(self, request: web.Request) -> web.Response:
        self._check(request)
        return web.Response(text=(STATIC / "index.html").read_text(), content_type="text/html")

    async def _no_icon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.Response(text=(STATIC / name).read_text(), content_type=STATIC_FILES[name])

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        self._check(request)
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        queue: asyncio.Queue = asyncio.Queue(maxsize=256)
        self._clients.add(queue)
        self._sockets.add(ws)
        held: set[str] = set()  # this page's keys down: released if it goes away
        sender = asyncio.ensure_future(self._send_loop(ws, queue))
        try:
            await ws.send_json({**self.hello, "paused": self.controls.paused})
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    reply = self._on_message(msg.data, held)
                    if reply is not None:
                        await ws.send_json(reply)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            sender.cancel()
            self._clients.discard(queue)
            self._sockets.discard(ws)
            for name in held:  # a closed tab must not leave an arrow key held down
                self.controls.release(name)
        return ws

    def _on_message(self, text: str, held: set[str]) -> dict | None:
        try:
            m = json.loads(text)
        except json.JSONDecodeError:
            return {"type": "error", "error": "not JSON"}
        if not isinstance(m, dict) or m.get("type") != "key" or not isinstance(m.get("key"), str):
            return {"type": "error", "error": f"unknown message {text[:80]!r}"}
        name, pid = m["key"], m.get("id")
        applied_ms = time.time() * 1000.0  # wall clock: the page, on the same machine, has the same one
        if m.get("down", True):
            ok = self.controls.press(name, pid if isinstance(pid, int) else None)
            if ok:
                held.add(name)
        else:
            ok = name in held
            self.controls.release(name)
            held.discard(name)
        return {
            "type": "ack",
            "id": pid,
            "key": name,
            "ok": ok,
            "paused": self.controls.paused,
            "t": applied_ms,
        }

    # ------------------------------------------------------------------------ outbound
    def _push_threadsafe(self, message: dict) -> None:
        loop = self.loop
        if loop is not None and loop.is_running() and self._clients:
            loop.call_soon_threadsafe(self._broadcast, message)

    def _broadcast(self, message: dict) -> None:
        for q in self._clients:
            if not q.full():  # a stalled page loses cues, not the robot's time
                q.put_nowait(message)

    async def _send_loop(self, ws: web.WebSocketResponse, queue: asyncio.Queue) -> None:
        period = 1.0 / self.fps
        sent_seq = -1
        next_tick = time.monotonic()
        try:
            while not ws.closed:
                try:
                    msg = await asyncio.wait_for(queue.get(), max(0.0, next_tick - time.monotonic()))
                    await ws.send_json(msg)
                    continue
                except asyncio.TimeoutError:
                    pass
                next_tick = time.monotonic() + period
                seq, frames, status = self.view.snapshot()
                status.update(type="status", engaged=self.controls.engaged, paused=self.controls.paused)
                await ws.send_json(status)
                if seq != sent_seq:
                    sent_seq = seq
                    loop = asyncio.get_running_loop()
                    for i, name in enumerate(self.view.streams):
                        if name in frames:
                            # off the event loop: a 640x480 JPEG takes ms that key presses should not wait
                            jpeg = await loop.run_in_executor(None, self._encoded, name, seq, frames[name])
                            await ws.send_bytes(bytes([i]) + jpeg)
        except (ConnectionError, RuntimeError):  # the page went away mid-send
            pass

    def _encoded(self, name: str, seq: int, frame: np.ndarray) -> bytes:
        cached = self._jpeg.get(name)
        if cached is None or cached[0] != seq:
            cached = (seq, encode_jpeg(frame, self.quality))
            self._jpeg[name] = cached
        return cached[1]
