"""What the probe agent and the collector both speak: the wire protocol's models, durations,
timestamps and slots, and the check definitions the collector hands out to agents.

Both sides import this package; neither imports the other (the collector's demo excepted, which
drives the agent's public entry point).
"""
