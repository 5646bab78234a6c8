"""Headless Debian Chromium for the UI tests: installed when missing (the test is skipped, saying why, only
where it cannot be), then a page rendered with its JavaScript to its DOM and a screenshot."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.helpers import ROOT

ARTIFACTS = ROOT / "runs" / "test-artifacts"  # screenshots the tests keep
# Without the background-networking flags Chromium tries Google's hosts, which this closed network refuses.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1600,1000", "--virtual-time-budget=20000"]


def chromium() -> str:
    """The chromium executable, installed from Debian's packages if it is not there."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed, and installing it needs root and apt-get (Debian)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            pytest.skip(f"chromium could not be installed: {' '.join(command)} exited {done.returncode}: "
                        f"{done.stderr.strip()[-300:]}")
    return shutil.which("chromium") or pytest.skip("apt-get installed chromium, but it is not on PATH")


def render_page(browser: str, url: str, screenshot: Path) -> str:
    """The DOM of `url` once its scripts ran (Chromium's virtual time), and a screenshot of it."""
    with tempfile.TemporaryDirectory() as profile:
        base = [browser, *FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180,
                             stdin=subprocess.DEVNULL).stdout
        subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=180,
                       stdin=subprocess.DEVNULL)
    return dom
