"""Starts the real `quiver` binary on an ephemeral loopback port for the compatibility tests."""

import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, extra_env=None):
        self.dir = tempfile.TemporaryDirectory(prefix="quiver-pytest-")
        self.port = free_port()
        env = dict(os.environ)
        env.update(
            {
                "QDRANT__SERVICE__HOST": "127.0.0.1",
                "QDRANT__SERVICE__HTTP_PORT": str(self.port),
                "QDRANT__STORAGE__STORAGE_PATH": os.path.join(self.dir.name, "storage"),
                "QDRANT__STORAGE__SNAPSHOTS_PATH": os.path.join(self.dir.name, "snapshots"),
                "QDRANT__LOG_LEVEL": "WARN",
            }
        )
        env.update(extra_env or {})
        self.log = open(os.path.join(self.dir.name, "server.log"), "wb")
        self.proc = subprocess.Popen([str(BINARY)], cwd=self.dir.name, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        self.snapshots_path = os.path.join(self.dir.name, "snapshots")
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("quiver did not start: " + Path(self.log.name).read_text(errors="replace"))
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        self.dir.cleanup()


@pytest.fixture(scope="module")
def server():
    assert BINARY.exists(), f"build the server first: {BINARY} is missing"
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def secured_server():
    s = Server({"QDRANT__SERVICE__API_KEY": "s3cret", "QDRANT__SERVICE__READ_ONLY_API_KEY": "reader"})
    yield s
    s.stop()
