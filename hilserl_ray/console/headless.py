"""Debian's headless Chromium under Playwright: one launch for the tests, the bench and the docs."""

from __future__ import annotations

import os

CHROMIUM = os.environ.get("HILSERL_CHROMIUM", "/usr/bin/chromium")
# Flags for a closed network: no background fetches, no first-run, a profile of its own (Playwright
# gives each launch a fresh --user-data-dir and passes --headless and --no-sandbox itself).
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright, executable: str | None = None):
    """A headless Chromium browser (Playwright's `sync_playwright()` object in, Browser out)."""
    return playwright.chromium.launch(executable_path=executable or CHROMIUM, args=CHROMIUM_ARGS)
