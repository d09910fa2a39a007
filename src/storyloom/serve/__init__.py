"""The parts of a storyloom service process tree: supervisor, API processes, the simulator launcher."""
