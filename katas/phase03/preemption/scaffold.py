"""What the lab gives you: the record a preemption experiment returns.

Filling it is your work: which requests ran, what they produced, who was evicted, how long it took.
"""

from __future__ import annotations

from typing import NamedTuple


class PreemptionRun(NamedTuple):
    """One run of a workload to completion.

    ``request_ids`` and ``outputs`` are in prompt order (ids are the ones ``add_request``
    returned). ``preempted`` lists every id in every step's ``preempted_req_ids``, step by step,
    repeats included (a request evicted twice appears twice). ``num_steps`` is the number of
    engine steps the run took.
    """

    request_ids: list[str]
    outputs: list[list[int]]
    preempted: list[str]
    num_steps: int
