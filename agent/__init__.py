"""Probe agent of the uptime monitor.

Its public entry point, for in-process use (the collector's demo runs six agents this way):
`from agent import Agent, parse_config`. Submodules are imported lazily, on first use.
"""
__version__ = "0.1.0"
__all__ = ["Agent", "AgentConfig", "ConfigError", "load_config", "parse_config"]


def __getattr__(name):
    if name == "Agent":
        from agent.runner import Agent

        return Agent
    if name in ("AgentConfig", "ConfigError", "load_config", "parse_config"):
        from agent import config

        return getattr(config, name)
    raise AttributeError(f"module 'agent' has no attribute {name!r}")
