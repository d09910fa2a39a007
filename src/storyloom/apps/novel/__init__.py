"""The writing application: chapter agents, the chapter flow with versions and judging, its CLI helpers.

The public surface is small on purpose: build a `ChapterRequest`, call `write_chapter` with a
`ModelClient` and `AgentModels`, read the `ChapterResult` (or override its choice).
"""

from storyloom.apps.novel.agents import AgentModels
from storyloom.apps.novel.chapter import choose_version, write_chapter
from storyloom.apps.novel.length import count_length, length_score
from storyloom.apps.novel.models import (
    AgentRun,
    ChapterRequest,
    ChapterResult,
    Character,
    JudgeMatch,
    JudgeReport,
    NovelInput,
    TokenUsage,
    VersionResult,
)

__all__ = [
    "AgentModels",
    "AgentRun",
    "ChapterRequest",
    "ChapterResult",
    "Character",
    "JudgeMatch",
    "JudgeReport",
    "NovelInput",
    "TokenUsage",
    "VersionResult",
    "choose_version",
    "count_length",
    "length_score",
    "write_chapter",
]
