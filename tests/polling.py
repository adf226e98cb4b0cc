"""Waiting on events in tests: poll for a condition (a file appearing), never sleep for a fixed time."""

import time


def wait_for(find, what: str, limit: float = 600.0):
    """find()'s first truthy value; fails the test after `limit` seconds without it."""
    deadline = time.monotonic() + limit
    while not (found := find()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return found
