"""An app whose `poison` jobs kill the worker process running them (SIGKILL), for the poison tests.

Loaded by worker subprocesses with STORYLOOM_APPS=crashy_app:app (this folder on PYTHONPATH).
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from pydantic import BaseModel

from storyloom.app import App
from storyloom.runner import AppJob


class CrashyInput(BaseModel):
    poison: bool = False
    sleep_s: float = 0.3


async def crashy(job: AppJob[CrashyInput]) -> dict[str, Any]:
    await asyncio.sleep(job.input.sleep_s)
    if job.input.poison:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"ok": True}


app: App[CrashyInput] = App(name="crashy", input=CrashyInput, handler=crashy)
