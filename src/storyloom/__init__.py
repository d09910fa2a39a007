"""storyloom: multi-agent LLM applications that run fast, concurrently and without losing work.

The public surface, for people writing an app: `App` (what an app declares), `Flow` and
`StepContext` (its steps), `OnError` (a step's failure policy), `AppJob` (what a handler gets),
`Schedule`/`AppTables` (an app's periodic jobs and tables), and the error base classes.
"""

from typing import TYPE_CHECKING, Any

from storyloom.app import App, AppTables, Schedule
from storyloom.errors import StoryloomError, UserError
from storyloom.flow import Flow, OnError, RunResult, StepContext

if TYPE_CHECKING:
    from storyloom.runner import AppJob

__all__ = [
    "App",
    "AppJob",
    "AppTables",
    "Flow",
    "OnError",
    "RunResult",
    "Schedule",
    "StepContext",
    "StoryloomError",
    "UserError",
    "__version__",
]

__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    # AppJob brings the job store with it (SQLAlchemy): loaded when asked for, so that a process
    # that only runs the simulator or a flow does not pay for it at `import storyloom`.
    if name == "AppJob":
        from storyloom.runner import AppJob

        return AppJob
    raise AttributeError(f"module 'storyloom' has no attribute {name!r}")
