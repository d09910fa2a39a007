"""The worker census that `serve` shares with its extra API processes, and their listening sockets."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path

import pytest

from storyloom.errors import ConfigError
from storyloom.serve.api_child import _parent_gone
from storyloom.serve.census import CensusReader, write_census_forever
from storyloom.serve.server import listen_sockets


async def test_a_reader_sees_the_count_while_the_writer_lives_and_zero_after(tmp_path: Path) -> None:
    path = tmp_path / "run" / "census.json"
    count = 3
    writer = asyncio.create_task(write_census_forever(path, lambda: count, every_s=0.02))
    reader = CensusReader(path, stale_s=1.0)
    await asyncio.sleep(0.1)
    assert await reader() == 3
    count = 1
    await asyncio.sleep(0.1)
    assert await reader() == 1
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert not path.exists()
    assert await reader() == 0  # no file: nobody vouches for any worker


async def test_a_stale_or_broken_census_counts_no_workers(tmp_path: Path) -> None:
    path = tmp_path / "census.json"
    reader = CensusReader(path, stale_s=1.0)
    path.write_text(json.dumps({"workers": 4, "at": time.time() - 5}))  # the parent stopped writing
    assert await reader() == 0
    path.write_text("{not json")
    assert await reader() == 0
    path.write_text(json.dumps({"workers": 4, "at": time.time()}))
    assert await reader() == 4


def test_several_listening_sockets_share_one_port() -> None:
    socks = listen_sockets("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in socks}
        assert len(ports) == 1
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in socks)
    finally:
        for s in socks:
            s.close()


def test_a_taken_port_is_one_sentence() -> None:
    taken = listen_sockets("127.0.0.1", 0, 1)[0]
    try:
        with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1"):
            listen_sockets("127.0.0.1", taken.getsockname()[1], 2)
    finally:
        taken.close()


async def test_a_child_notices_that_its_parent_is_gone() -> None:
    async with asyncio.timeout(2.0):
        await _parent_gone(os.getpid())  # not our parent: as if we had been re-parented
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):
            await _parent_gone(os.getppid())


def test_renice_adds_to_this_process_niceness() -> None:
    import subprocess
    import sys

    import psutil

    from storyloom.serve.supervisor import renice

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        renice(child.pid, 4)
        assert psutil.Process(child.pid).nice() == min(19, psutil.Process().nice() + 4)
    finally:
        child.kill()
        child.wait()
    renice(child.pid, 4)  # gone: nothing to do, no error
