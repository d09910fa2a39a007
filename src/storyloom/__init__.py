"""storyloom: multi-agent LLM writing workflows that run fast, concurrently and without losing work."""

from storyloom.errors import StoryloomError, UserError

__all__ = ["StoryloomError", "UserError", "__version__"]

__version__ = "0.1.0"
