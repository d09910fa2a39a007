"""A deployment on one machine: API nodes and worker nodes as separate `storyloom` processes, each
on its own loopback address (127.0.0.2, 127.0.0.3, ...), sharing one Postgres and one Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from support.processes import free_port, nginx_command, render_nginx_conf, wait_port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORYLOOM_", "PROMETHEUS_"))}
    env.update(extra)
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "storyloom.cli", *args]


@dataclass
class Node:
    """One node's process; `start` again after `kill` brings it back on the same address and port."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    host: str | None = None
    port: int | None = None
    proc: subprocess.Popen[str] | None = None
    ready_line: str = field(default="")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> Node:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()  # a restart: the dead process's pipe
        log = self.log.open("a")
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True, env=self.env
        )
        log.close()
        if self.host is not None and self.port is not None:
            line: list[str] = []
            reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
            reader.start()
            reader.join(timeout_s)
            if not line or not line[0].startswith("http"):
                self.kill()
                raise RuntimeError(f"{self.name} did not start; see {self.log}")
            wait_port(self.host, self.port)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: no drain, no goodbye (what a lost machine looks like)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


class Cluster:
    def __init__(self, work: Path, *, database_url: str, hub_url: str, sim_url: str) -> None:
        self.work = work
        self.database_url = database_url
        self.hub_url = hub_url
        self.sim_url = sim_url
        self.apis: list[Node] = []
        self.workers: list[Node] = []
        self.nginx: Node | None = None
        self._next_address = 2

    def _address(self) -> str:
        host = f"127.0.0.{self._next_address}"
        self._next_address += 1
        return host

    def _env(self, **extra: str) -> dict[str, str]:
        return clean_env(
            STORYLOOM_EVENT_HUB_URL=self.hub_url,
            STORYLOOM_LOG_LEVEL="WARNING",
            STORYLOOM_PROFILE="generic",
            STORYLOOM_BASE_URL=self.sim_url,
            STORYLOOM_MODEL="sim-writer",
            **extra,
        )

    def add_api(self, *, auth: bool = False, **env: str) -> Node:
        host = self._address()
        port = free_port(host)
        name = f"api{len(self.apis) + 1}"
        data = self.work / name
        args = ["serve", "--host", host, "--port", str(port), "--workers", "0", "--data-dir", str(data)]
        args += ["--database-url", self.database_url, "--heartbeat-s", "1", "--grace-s", "1"]
        args += ["--auth" if auth else "--no-auth"]
        node = Node(name, cli(*args), self._env(**env), self.work / f"{name}.log", host=host, port=port)
        self.apis.append(node)
        return node.start()

    def add_worker(self, *, lease_s: float = 3.0, concurrency: int = 50) -> Node:
        host = self._address()  # the node's name: workers connect out, they listen on nothing
        name = f"worker{len(self.workers) + 1}"
        args = ["worker", "--database-url", self.database_url, "--data-dir", str(self.work / name)]
        args += ["--lease-s", str(lease_s), "--grace-s", "1", "--concurrency", str(concurrency)]
        args += ["--worker-id", f"{name}@{host}"]
        node = Node(name, cli(*args), self._env(), self.work / f"{name}.log")
        self.workers.append(node)
        return node.start()

    def add_nginx(self) -> Node:
        """deploy/nginx.conf in front of the first two API nodes."""
        host = self._address()
        port = free_port(host)
        (self.work / "nginx").mkdir(exist_ok=True)
        conf = render_nginx_conf(
            self.work / "nginx" / "nginx.conf",
            upstreams=[f"{a.host}:{a.port}" for a in self.apis[:2]],
            listen=f"{host}:{port}",
        )
        argv = nginx_command(conf, "-g", "daemon off;")
        self.nginx = Node("nginx", argv, clean_env(), self.work / "nginx.log", host=host, port=port)
        log = self.nginx.log.open("a")
        self.nginx.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, text=True)
        log.close()
        wait_port(host, port)
        return self.nginx

    def close(self) -> None:
        nodes = [*self.apis, *self.workers, *([self.nginx] if self.nginx else [])]
        for node in nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(20)
                except subprocess.TimeoutExpired:
                    node.kill()
                if node.proc.stdout is not None:
                    node.proc.stdout.close()
