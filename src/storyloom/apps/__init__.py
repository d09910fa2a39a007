"""Applications on the engine: the registry, and the built-in apps (one package each)."""
