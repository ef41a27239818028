"""Start a twin in its own process and point a run at it (for `make twin-test`, benches, tests).

The twin runs as a user would run it (`python -m hilserl_ray.twin`), so what the robot actor
meets is a separate process on the other end of a pty, exactly as with a real arm.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from hilserl_ray.twin.clock import rate_flags


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TwinProcess:
    def __init__(
        self, config: str, run_dir: Path, *args: str, port: int | None = None, log: Path | None = None
    ):
        self.dir = Path(run_dir)
        self.port = port or free_port()
        self.log_path = log or self.dir / "twin.out"
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "hilserl_ray.twin", "--config", config, "--dir", str(self.dir)]
        cmd += ["--port", str(self.port), *args]
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ})
        self.paths: dict = {}
        self.rates: dict = {}  # env.fps etc. for a slowed twin (--time-scale)

    def wait_ready(self, timeout: float = 60.0) -> TwinProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the twin exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            try:
                status = self.status()
                self.paths, self.rates = status["paths"], status["clock"]["rate_overrides"]
                return self
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"the twin did not answer on port {self.port} within {timeout} s")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def status(self) -> dict:
        with urllib.request.urlopen(self.url("status"), timeout=5) as r:
            return json.load(r)

    def post(self, action: str, timeout: float = 5.0) -> dict:
        req = urllib.request.Request(self.url(action), data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.load(r)

    def overrides(self) -> list[str]:
        paths = [f"--{k}={v}" for k, v in self.paths.items() if k not in ("status", "log")]
        return paths + rate_flags(self.rates)

    def events(self, kinds: tuple[str, ...] | None = None) -> list[dict]:
        path = self.dir / "twin.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
        return [r for r in rows if kinds is None or r["event"] in kinds]

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@contextmanager
def running_twin(config: str, run_dir: Path, *args: str, port: int | None = None):
    twin = TwinProcess(config, run_dir, *args, port=port)
    try:
        yield twin.wait_ready()
    finally:
        twin.stop()
