"""``expect_raises``: ``pytest.raises`` that says what the learner got wrong when nothing raised.

A bare ``pytest.raises`` fails with "DID NOT RAISE", which tells a learner nothing about the
contract they broke. Every kata test that expects an error states why it must be raised::

    with expect_raises(ValueError, "a block size of 0 cannot hold a token", match="block_size"):
        impl.blocks_needed(10, block_size=0)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def expect_raises(expected: type[BaseException] | tuple[type[BaseException], ...], why: str,
                  *, match: str | None = None) -> Iterator[pytest.ExceptionInfo]:
    """Expect ``expected`` (optionally with a message matching ``match``) inside the block;
    otherwise fail with ``why`` and what happened instead."""
    names = (" or ".join(e.__name__ for e in expected) if isinstance(expected, tuple)
             else expected.__name__)
    try:
        with pytest.raises(expected, match=match) as info:
            yield info
    except pytest.fail.Exception:
        pytest.fail(f"expected {names}: {why}; nothing was raised", pytrace=False)
    except AssertionError as mismatch:  # raised, but the message did not match
        if match is None:
            raise
        pytest.fail(f"expected {names} whose message matches {match!r}: {why}; "
                    f"got: {str(mismatch).splitlines()[0] if str(mismatch) else mismatch!r}",
                    pytrace=False)
