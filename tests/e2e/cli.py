"""Run the real `aggregator` command as a subprocess, with a hard timeout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLI_TIMEOUT_SECONDS = 120


def run_cli(*args: str, config: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "aggregator"]
    if config is not None:
        command += ["--config", str(config)]
    env = {key: value for key, value in os.environ.items() if key != "AGGREGATOR_CONFIG"}
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def write_config(directory: Path, feeds: dict[str, str], extra: str = "") -> Path:
    """A feeds.yaml in `directory` listing `feeds` (name -> URL)."""
    lines = ["title: Test Digest", "site_url: http://127.0.0.1:8080/", extra, "feeds:"]
    for name, url in feeds.items():
        lines += [f"  - name: {name}", f"    url: {url}", "    timeout: 5s"]
    path = directory / "feeds.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
