"""docs/configuration.md is what the configuration models say today: every key, type and default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_configuration_reference_is_current():
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "config_reference.py")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    current = (ROOT / "docs" / "configuration.md").read_text()
    assert proc.stdout == current, "docs/configuration.md is stale: run python docs/config_reference.py > docs/configuration.md"


def test_the_reference_names_every_top_level_key():
    from agent.config import AgentConfig
    from collector.config import CollectorConfig

    text = (ROOT / "docs" / "configuration.md").read_text()
    for model in (CollectorConfig, AgentConfig):
        for name in model.model_fields:
            assert f"| `{name}" in text, name
