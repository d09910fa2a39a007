"""Servers a test stops and starts again itself (the session fixtures' servers must stay up)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def wait_port(host: str, port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout_s}s")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private redis-server on one port that a test may stop (`stop`) and start again (`start`)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed (.ci/run installs it)")
        self.exe = exe
        self.host = host
        self.port = free_port(host)
        self.dir = tempfile.mkdtemp(prefix="storyloom-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        args = [self.exe, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [*args, "--dir", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.host, self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


REPO = Path(__file__).resolve().parents[2]
NGINX_CONF = REPO / "deploy" / "nginx.conf"


def render_nginx_conf(dest: Path, *, upstreams: list[str], listen: str) -> Path:
    """deploy/nginx.conf with the compose service names replaced by real addresses (`nginx -t`
    resolves every upstream) and its temp paths in `dest`'s directory, so root is not needed."""
    text = NGINX_CONF.read_text(encoding="utf-8")
    assert "server api1:8000" in text and "server api2:8000" in text and "listen 80;" in text
    text = text.replace("server api1:8000", f"server {upstreams[0]}").replace(
        "server api2:8000", f"server {upstreams[1]}"
    )
    text = text.replace("listen 80;", f"listen {listen};")
    work = dest.parent
    temps = "".join(
        f"    {name}_temp_path {work / name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + temps + "    access_log off;\n", 1)
    dest.write_text(f"pid {work / 'nginx.pid'};\nerror_log {work / 'error.log'} warn;\n" + text)
    return dest


def nginx_command(conf: Path, *extra: str) -> list[str]:
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if exe is None:
        pytest.skip("nginx is not installed (Debian's nginx package)")
    return [exe, "-p", str(conf.parent), "-e", str(conf.parent / "error.log"), "-c", str(conf), *extra]
