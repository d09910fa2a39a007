"""The built-in simulated OpenAI-compatible provider: latency, quotas, faults, story-like content."""

from storyloom.sim.config import FaultRates, ModelProfile, Quota, SimConfig, load_sim_config
from storyloom.sim.embedded import SimHandle, run_sim_in_thread, serve_sim
from storyloom.sim.server import create_sim_app

__all__ = [
    "FaultRates",
    "ModelProfile",
    "Quota",
    "SimConfig",
    "SimHandle",
    "create_sim_app",
    "load_sim_config",
    "run_sim_in_thread",
    "serve_sim",
]
