"""What the lab gives you: the record a lifecycle trace is made of.

``Event`` is not your work; filling a list with them is.
"""

from __future__ import annotations

from typing import NamedTuple


class Event(NamedTuple):
    """One photograph of one request, taken right after an engine step.

    ``status`` is the *name* of the request's ``RequestStatus`` (``"RUNNING"``,
    ``"FINISHED_LENGTH"``...), a plain string, so a trace prints and compares like the log
    lines of a real engine.
    """

    request_id: str
    status: str
    num_computed_tokens: int
    num_tokens: int
