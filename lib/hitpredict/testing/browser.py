"""Open a local HTML page in headless Chromium: its DOM after load, its console messages, a screenshot.

Tests use it to check the report the way a person would see it. Chromium is the Debian
package ``chromium``; :func:`find_chromium` installs it with apt-get when it is missing
and the process may (root on Debian or Ubuntu).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_CONSOLE = re.compile(r":(INFO|WARNING|ERROR|FATAL):CONSOLE[^\]]*\] (.*)$")


class BrowserError(RuntimeError):
    """Chromium is missing and cannot be installed, or it failed to run."""


@dataclass
class PageView:
    """What a headless browser saw of a page: its DOM after scripts ran, its console and a screenshot."""

    dom: str
    console: list[str]         # every console message of the page (log, warning, error, uncaught exceptions)
    screenshot: Path


def find_chromium(install: bool = True) -> str:
    """Path of the Chromium binary; installs the Debian package ``chromium`` if allowed and missing."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if install and shutil.which("apt-get") and os.geteuid() == 0:
        log.info("installing the Debian package chromium (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, timeout=1200,
                       stdout=subprocess.DEVNULL)
        return find_chromium(install=False)
    raise BrowserError("chromium is not installed (apt-get install chromium) and cannot be installed here")


def _run(binary: str, page: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="hitpredict-chromium-") as profile:
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                   "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                   "--virtual-time-budget=5000", *args, page.resolve().as_uri()]
        env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": "disabled:"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise BrowserError(f"chromium exited {done.returncode}: {done.stderr[-1000:]}")
    return done


def open_page(page: str | os.PathLike[str], screenshot: str | os.PathLike[str], width: int = 1280,
              height: int = 2400) -> PageView:
    """Load ``page`` twice (DOM dump, then screenshot) and collect the console messages of both."""
    binary = find_chromium()
    page, screenshot = Path(page), Path(screenshot)
    dumped = _run(binary, page, "--dump-dom")
    shot = _run(binary, page, f"--window-size={width},{height}", f"--screenshot={screenshot}")
    console = [m.group(2) for text in (dumped.stderr, shot.stderr) for line in text.splitlines()
               if (m := _CONSOLE.search(line))]
    if not screenshot.is_file():
        raise BrowserError(f"chromium wrote no screenshot: {shot.stderr[-1000:]}")
    return PageView(dom=dumped.stdout, console=console, screenshot=screenshot)
