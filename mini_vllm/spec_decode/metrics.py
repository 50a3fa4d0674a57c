"""SpecDecodingStats: how many drafts were proposed and how many the target kept, per position.

Upstream twin: ``vllm/v1/spec_decode/metrics.py: SpecDecodingStats`` (``observe_draft``) and the
rates ``SpecDecodingLogging`` prints from it. One "draft" is one verify of one request with at
least one draft token; position ``i`` counts as accepted when drafts ``0..i`` all were.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpecDecodingStats:
    num_spec_tokens: int
    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    num_accepted_tokens_per_pos: list[int] = field(default_factory=list)
    num_draft_tokens_per_pos: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        k = self.num_spec_tokens
        self.num_accepted_tokens_per_pos = self.num_accepted_tokens_per_pos or [0] * k
        self.num_draft_tokens_per_pos = self.num_draft_tokens_per_pos or [0] * k

    def observe_draft(self, num_draft_tokens: int, num_accepted_tokens: int) -> None:
        if not 0 <= num_accepted_tokens <= num_draft_tokens <= self.num_spec_tokens:
            raise ValueError(f"need 0 <= accepted ({num_accepted_tokens}) <= drafted "
                             f"({num_draft_tokens}) <= k ({self.num_spec_tokens})")
        self.num_drafts += 1
        self.num_draft_tokens += num_draft_tokens
        self.num_accepted_tokens += num_accepted_tokens
        for i in range(num_accepted_tokens):
            self.num_accepted_tokens_per_pos[i] += 1
        for i in range(num_draft_tokens):
            self.num_draft_tokens_per_pos[i] += 1

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens / drafted tokens (0 before any draft)."""
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0

    @property
    def mean_acceptance_length(self) -> float:
        """Tokens one verify emits on average: 1 + accepted drafts per draft (upstream's)."""
        return 1.0 + (self.num_accepted_tokens / self.num_drafts if self.num_drafts else 0.0)

    @property
    def acceptance_rate_per_pos(self) -> list[float]:
        """Per position ``i``: the fraction of drafts whose first ``i + 1`` tokens were kept."""
        return [a / self.num_drafts if self.num_drafts else 0.0
                for a in self.num_accepted_tokens_per_pos]
