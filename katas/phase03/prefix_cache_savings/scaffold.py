"""What the lab gives you: the record the compute odometer returns.

Reading the odometer is your work; this is only its display.
"""

from __future__ import annotations

from typing import NamedTuple


class Odometer(NamedTuple):
    """Scheduled tokens over one run: every token of forward-pass work, counted once.

    ``step_totals[i]`` is step ``i``'s ``total_num_scheduled_tokens``; ``total`` is their sum.
    ``outputs`` are the generated token ids, one list per prompt, in prompt order.
    """

    total: int
    step_totals: list[int]
    outputs: list[list[int]]
