"""The gateway benchmark: worker processes driving chapter-shaped call patterns, and the runner."""
