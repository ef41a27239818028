"""The twin's HTTP face on 127.0.0.1: MJPEG cameras, key presses, status, the USB cable.

Cameras are MJPEG over HTTP (`multipart/x-mixed-replace`), which opencv-python-headless's FFmpeg
backend opens as `cv2.VideoCapture("http://127.0.0.1:PORT/<camera>.mjpg")` with no system
package and no v4l2loopback kernel module: the robot's `OpenCVCamera` reads it like a webcam.
Each camera is rendered from the arm's state at its configured size and fps (of the twin's
clock) on one render thread (a GL context belongs to the thread that made it).

  GET  /<camera>.mjpg         the camera stream
  GET  /keys                  key presses as `press <key>` / `release <key>` lines (empty line: alive)
  GET  /status                JSON: torque, commanded vs reached joints, counters, the human, the bus
  POST /unplug?seconds=S      pull the follower's USB cable (`&bus=leader` for the leader's);
                              plugged back after S seconds if given
  POST /plug                  plug it back
  POST /person?mode=M         what the scripted person does from the next episode (human.MODES)
  POST /person/calibrate?bus=B&step=mid|sweep   answer `calibrate`'s prompts by hand
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import cv2
import mujoco

from hilserl_ray.envs.sim import make_renderer

log = logging.getLogger(__name__)


class KeyHub:
    """Fans key presses out to every connected /keys client."""

    def __init__(self):
        self._clients: list[queue.Queue] = []
        self._lock = threading.Lock()

    def subscribe(self) -> queue.Queue:
        q: queue.Queue = queue.Queue()
        with self._lock:
            self._clients.append(q)
        return q

    def unsubscribe(self, q: queue.Queue) -> None:
        with self._lock:
            if q in self._clients:
                self._clients.remove(q)

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def tap(self, key: str) -> None:
        self.press(key)
        self.release(key)

    def press(self, key: str) -> None:
        self._send(f"press {key}\n")

    def release(self, key: str) -> None:
        self._send(f"release {key}\n")

    def _send(self, line: str) -> None:
        with self._lock:
            for q in self._clients:
                q.put(line)


class Cameras:
    """Renders `cameras` [(name, height, width, fps)] from the arm's state; newest JPEG of each.
    fps in the seconds of the arm's clock."""

    def __init__(self, arm, cameras: list[tuple[str, int, int, float]], quality: int = 85):
        self.arm, self.cameras, self.quality = arm, cameras, quality
        self.clock = arm.clock
        self.frames: dict[str, tuple[int, bytes]] = {}
        self.rendered = 0
        self.render_s = 0.0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.cameras:
            self._thread = threading.Thread(target=self._run, name="twin-cameras", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        model = self.arm.model
        data = mujoco.MjData(model)
        renderers = {(h, w): make_renderer(model, h, w) for _, h, w, _ in self.cameras}
        clock = self.clock
        due = dict.fromkeys((c[0] for c in self.cameras), clock.now())
        try:
            while not self._stop.is_set():
                now = clock.now()
                name, h, w, fps = min(self.cameras, key=lambda c: due[c[0]])
                if due[name] > now:
                    clock.wait(self._stop, due[name] - now)
                    continue
                due[name] = max(due[name] + 1.0 / fps, now)
                t0 = time.monotonic()
                data.qpos[:] = self.arm.snapshot()
                mujoco.mj_forward(model, data)
                r = renderers[(h, w)]
                r.update_scene(data, camera=name)
                rgb = r.render()
                ok, jpg = cv2.imencode(
                    ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.quality]
                )
                self.render_s += time.monotonic() - t0
                with self._cond:
                    seq = self.frames.get(name, (0, b""))[0] + 1
                    self.frames[name] = (seq, jpg.tobytes())
                    self.rendered += 1
                    self._cond.notify_all()
        finally:
            for r in renderers.values():
                r.close()

    def wait_frame(self, name: str, after: int, timeout: float = 2.0) -> tuple[int, bytes] | None:
        with self._cond:
            self._cond.wait_for(
                lambda: self.frames.get(name, (0, b""))[0] > after or self._stop.is_set(), timeout
            )
            frame = self.frames.get(name)
            return frame if frame is not None and frame[0] > after else None

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)


class TwinServer:
    def __init__(self, twin, host: str, port: int):
        self.twin = twin
        handler = type("Handler", (_Handler,), {"twin": twin})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="twin-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for a serve_forever that never started
            self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    twin = None
    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:  # quiet: the twin logs what matters
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server name)
        path = urlparse(self.path).path.strip("/")
        if path == "status":
            return self._json(self.twin.status())
        if path == "keys":
            return self._keys()
        if path.endswith(".mjpg") and path[: -len(".mjpg")] in self.twin.camera_names:
            return self._mjpeg(path[: -len(".mjpg")])
        self._json({"error": f"no such path /{path}", "paths": self.twin.paths()}, 404)

    def do_POST(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        query = parse_qs(url.query)
        which = query.get("bus", ["follower"])[0]
        path = url.path.strip("/")
        if path == "unplug":
            seconds = float(query["seconds"][0]) if "seconds" in query else None
            return self._json(self.twin.unplug(which, seconds))
        if path == "plug":
            return self._json(self.twin.plug(which))
        try:
            if path == "person":
                return self._json(self.twin.human.set_mode(query.get("mode", [""])[0]))
            if path == "person/calibrate":
                return self._json(self.twin.human.calibrate(which, query.get("step", [""])[0]))
        except ValueError as e:
            return self._json({"error": str(e)}, 400)
        self._json({"error": f"no such action /{path}"}, 404)

    def _json(self, obj, code: int = 200) -> None:
        body = json.dumps(obj, indent=1).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _keys(self) -> None:
        hub = self.twin.keys
        q = hub.subscribe()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        try:
            while not self.twin.stopping:
                try:
                    line = q.get(timeout=1.0)
                except queue.Empty:
                    line = "\n"  # keep-alive: a dead client shows up as a failed write
                self.wfile.write(line.encode())
                self.wfile.flush()
        except OSError:
            pass
        finally:
            hub.unsubscribe(q)

    def _mjpeg(self, name: str) -> None:
        cams = self.twin.cameras
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        seq = 0
        try:
            while not self.twin.stopping:
                frame = cams.wait_frame(name, seq)
                if frame is None:
                    continue
                seq, jpg = frame
                self.wfile.write(
                    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                    + jpg
                    + b"\r\n"
                )
                self.wfile.flush()
        except OSError:
            pass


def camera_devices(host: str, port: int, names) -> dict[str, str]:
    return {n: f"http://{host}:{port}/{n}.mjpg" for n in names}
