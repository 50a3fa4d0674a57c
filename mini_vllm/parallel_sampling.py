"""Parallel sampling (``SamplingParams.n > 1``): one prompt fanned out into n child requests.

Upstream twin: ``vllm/v1/engine/parallel_sampling.py: ParentRequest`` (vLLM 0.32; the course's
v0.22.1 has the same rules). The engine core never sees a parent: it sees n ordinary requests
that happen to carry the same prompt. Nothing in the scheduler or the KV manager knows about
``n``; the sharing is prefix caching doing its usual job:

* the first child admitted prefills the prompt and registers its full blocks in the cache index
  (mini_vllm hashes eagerly, at allocation, so even a sibling admitted in the same step hits);
* every later child hits those blocks at admission (``ref_cnt`` climbs to n), computes only the
  partial tail block (and, when the prompt is a whole number of blocks, its last token: the
  ``num_tokens - 1`` cap), and writes its own samples into private blocks from there on;
* with caching off nothing is shared: n full prefills.

Rules copied from upstream:

* child ids are ``f"{index}_{parent_id}"``, index ``0 .. n-1``;
* children's parameters are a copy of the parent's with ``n = 1``; a seeded parent seeds child
  ``i`` with ``seed + i`` (so the samples still differ, and the whole set is reproducible); an
  unseeded parent's children share one copy;
* the parent's result lists the children's outputs in index order, once all have finished.
"""

from __future__ import annotations

from copy import copy
from dataclasses import dataclass
from typing import Any

from mini_vllm.request import SamplingParams


def child_request_id(parent_id: str, index: int) -> str:
    """Upstream's child id: the sample's index, an underscore, the parent's id."""
    return f"{index}_{parent_id}"


@dataclass(frozen=True)
class ParallelRequestOutput:
    """What ``LLMEngine.generate`` returns for a prompt whose ``n > 1``.

    ``outputs[i]`` is child ``i``'s :class:`~mini_vllm.engine.RequestOutput` (its ``request_id``
    is the child's id). Upstream's ``RequestOutput`` nests ``CompletionOutput`` s the same way;
    a prompt with ``n == 1`` keeps mini_vllm's flat ``RequestOutput``.
    """

    request_id: str
    prompt_token_ids: list[int]
    outputs: list[Any]

    @property
    def n(self) -> int:
        return len(self.outputs)


class ParentRequest:
    """One ``n > 1`` request: hands out its children's ids and parameters, gathers their
    outputs, and knows when it is complete."""

    def __init__(self, request_id: str, sampling_params: SamplingParams) -> None:
        if not isinstance(request_id, str) or not request_id:
            raise ValueError(f"request_id must be a non-empty str, got {request_id!r}")
        self.request_id = request_id
        self.sampling_params = sampling_params
        self._shared_child_params: SamplingParams | None = None
        self.child_request_ids: list[str] = [child_request_id(request_id, i)
                                             for i in range(sampling_params.n)]
        self._outputs: dict[int, Any] = {}

    @property
    def n(self) -> int:
        return self.sampling_params.n

    def child_sampling_params(self, index: int) -> SamplingParams:
        """The parameters of child ``index``: the parent's, ``n = 1``, seed ``seed + index``."""
        if not 0 <= index < self.n:
            raise ValueError(f"child index must be in [0, {self.n}), got {index!r}")
        if self._shared_child_params is not None:
            return self._shared_child_params
        params = copy(self.sampling_params)
        params.n = 1
        if self.sampling_params.seed is None:
            self._shared_child_params = params  # no seed: one copy serves every child
        else:
            params.seed = self.sampling_params.seed + index
        return params

    def get_child_info(self, index: int) -> tuple[str, SamplingParams]:
        """``(child id, child parameters)`` for child ``index`` (upstream's name)."""
        params = self.child_sampling_params(index)
        return self.child_request_ids[index], params

    def add_output(self, child_id: str, output: Any) -> None:
        """Record a finished child's output; each child reports once."""
        if child_id not in self.child_request_ids:
            raise ValueError(f"{child_id!r} is not a child of {self.request_id!r}")
        index = self.child_request_ids.index(child_id)
        if index in self._outputs:
            raise ValueError(f"child {child_id!r} already reported its output")
        self._outputs[index] = output

    @property
    def finished(self) -> bool:
        return len(self._outputs) == self.n

    def get_output(self, prompt_token_ids: list[int]) -> ParallelRequestOutput:
        """The gathered result, children in index order; ``ValueError`` until all finished."""
        if not self.finished:
            missing = [c for i, c in enumerate(self.child_request_ids) if i not in self._outputs]
            raise ValueError(f"{self.request_id!r}: children {missing} have not finished")
        return ParallelRequestOutput(
            request_id=self.request_id,
            prompt_token_ids=list(prompt_token_ids),
            outputs=[self._outputs[i] for i in range(self.n)],
        )
