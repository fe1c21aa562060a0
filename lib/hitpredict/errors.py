"""The one base of every error a user can fix: bad config, bad input, a missing model.

The CLI prints a :class:`HitpredictError` as one line (``hitpredict: <message>``) and exits
with status 2; any other exception is a bug and is reported with its traceback. Raise a
subclass for anything the user caused and can correct, with a message that names the file,
row, key or value at fault. Internal signals that never reach the user (a failed decode that
becomes a row, a worker that died) do not derive from it.
"""
from __future__ import annotations


class HitpredictError(Exception):
    """A user-facing error: its message is one line that says what to fix."""
