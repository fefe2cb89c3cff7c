"""Probe agent of the uptime monitor.

`from agent import Agent, load_config` for in-process use; submodules import lazily so that
`agent.durations` stays cheap for the collector.
"""
__version__ = "0.1.0"
__all__ = ["Agent", "AgentConfig", "ConfigError", "load_config"]


def __getattr__(name):
    if name == "Agent":
        from agent.runner import Agent

        return Agent
    if name in ("AgentConfig", "ConfigError", "load_config"):
        from agent import config

        return getattr(config, name)
    raise AttributeError(f"module 'agent' has no attribute {name!r}")
