"""The novel's HTTP routes: the seed's `/api/novel/*` contract and `/api/projects/*`, `/api/books/*`."""

from fastapi import APIRouter

from storyloom.apps.novel.book.routes import router as books_router
from storyloom.apps.novel.routes.projects import router as projects_router
from storyloom.apps.novel.routes.seed import router as seed_router

__all__ = ["router"]

router = APIRouter()
router.include_router(seed_router)
router.include_router(projects_router)
router.include_router(books_router)
