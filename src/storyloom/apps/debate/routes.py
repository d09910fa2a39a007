"""/api/debate/conversations: a tenant's conversations and their turns (another tenant's: 404)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from storyloom.api.deps import AUTH, NOT_FOUND, ServicesDep, Tenant
from storyloom.api.errors import NotFoundError
from storyloom.api.services import Services
from storyloom.apps.debate.conversations import ConversationStore

__all__ = ["router"]

router = APIRouter(prefix="/api/debate", tags=["debate"], responses=AUTH)

SessionPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class TurnOut(BaseModel):
    role: str
    content: str
    job_id: str
    created_at: float


class ConversationOut(BaseModel):
    id: str
    summary: str
    summarized_upto: int
    turns: list[TurnOut]
    created_at: float
    updated_at: float


class ConversationItem(BaseModel):
    id: str
    updated_at: float
    messages: int


def _store(services: Services) -> ConversationStore:
    store: ConversationStore = services.shared("debate.conversations", lambda: ConversationStore(services.db))
    return store


@router.get("/conversations", response_model=list[ConversationItem])
async def list_conversations(
    services: ServicesDep, tenant: Tenant, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[ConversationItem]:
    rows = await _store(services).list(tenant, limit=limit)
    return [ConversationItem(id=i, updated_at=u, messages=n) for i, u, n in rows]


@router.get("/conversations/{session_id}", response_model=ConversationOut, responses=NOT_FOUND)
async def get_conversation(session_id: SessionPath, services: ServicesDep, tenant: Tenant) -> ConversationOut:
    found = await _store(services).get(tenant, session_id)
    if found is None:
        raise NotFoundError(f"no conversation {session_id!r}.")
    return ConversationOut(
        id=found.id,
        summary=found.summary,
        summarized_upto=found.summarized_upto,
        turns=[
            TurnOut(role=t.role, content=t.content, job_id=t.job_id, created_at=t.created_at)
            for t in found.turns
        ],
        created_at=found.created_at,
        updated_at=found.updated_at,
    )
