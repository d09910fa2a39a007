"""deploy/: the nginx config passes `nginx -t` and says what SSE needs; the compose file runs the
roles the README promises with commands the CLI accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from support.processes import NGINX_CONF, REPO, nginx_command, render_nginx_conf


def test_nginx_conf_is_valid_and_made_for_sse(tmp_path: Path) -> None:
    conf = render_nginx_conf(
        tmp_path / "nginx.conf", upstreams=["127.0.0.2:8000", "127.0.0.3:8000"], listen="127.0.0.1:18080"
    )
    done = subprocess.run(nginx_command(conf, "-t"), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr and "test is successful" in done.stderr
    text = NGINX_CONF.read_text()
    sse = text[text.index("location ~ ^/api/(jobs") :]
    for directive in ("proxy_buffering off;", "proxy_read_timeout 1h;", "proxy_http_version 1.1;"):
        assert directive in sse
    for sticky in ("ip_hash", "sticky", "hash "):  # any node serves any stream
        assert sticky not in text


def test_nginx_refuses_a_broken_config(tmp_path: Path) -> None:
    conf = render_nginx_conf(
        tmp_path / "nginx.conf", upstreams=["127.0.0.2:8000", "127.0.0.3:8000"], listen="127.0.0.1:18080"
    )
    conf.write_text(conf.read_text().replace("proxy_buffering off;", "proxy_buffering sometimes;"))
    done = subprocess.run(nginx_command(conf, "-t"), capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "proxy_buffering" in done.stderr  # the check above can fail


def test_compose_runs_every_role_with_real_commands() -> None:
    doc = yaml.safe_load((REPO / "deploy" / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"nginx", "api1", "api2", "worker1", "worker2", "postgres", "redis", "sim"} <= set(services)
    for name in ("api1", "api2"):
        command = services[name]["command"]
        assert command[:2] == ["storyloom", "serve"] and command[command.index("--workers") + 1] == "0"
        env = services[name]["environment"]
        assert env["STORYLOOM_EVENT_HUB_URL"].startswith("redis://")
        assert env["STORYLOOM_DATABASE_URL"].startswith("postgresql+asyncpg://")
    for name in ("worker1", "worker2"):
        assert services[name]["command"][:2] == ["storyloom", "worker"]
    assert services["nginx"]["volumes"] == ["./nginx.conf:/etc/nginx/nginx.conf:ro"]
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and "FROM python:3.12-slim" in dockerfile
