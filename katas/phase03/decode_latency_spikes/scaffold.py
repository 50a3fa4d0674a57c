"""What the lab gives you: the experiment's fixed cast, and the shape of its result.

The staging (who arrives when) is your work; these constants and the record are not.
"""

from __future__ import annotations

from typing import NamedTuple

VICTIM_PROMPT = "hello"
"""The decoding request whose latency we watch (5 tokens with the byte tokenizer)."""

LONG_PROMPT_TOKEN = "x"
"""The long prompt is this character repeated ``long_prompt_len`` times."""

LONG_PROMPT_MAX_TOKENS = 2
"""The long request samples two tokens: one at the end of its prefill, one more as a decode."""


class SpikeProfile(NamedTuple):
    """What the victim lived through, from the long prompt's arrival until it finished.

    ``costs`` has one entry per step in which the victim was scheduled: that step's total
    scheduled tokens (everyone's). ``victim_output_token_ids`` is the victim's whole output.
    ``num_steps`` counts every engine step from the long prompt's arrival until the victim
    finished, whether or not the victim was scheduled in it.
    """

    costs: list[int]
    victim_output_token_ids: list[int]
    num_steps: int
