"""ModelRunner: turn one step's plan into model inputs, own the paged KV cache, run the model.

Upstream twins: ``vllm/v1/worker/gpu_model_runner.py: GPUModelRunner`` (``_prepare_inputs``,
``execute_model``, ``initialize_kv_cache``) and ``vllm/v1/worker/block_table.py: BlockTable``
(``compute_slot_mapping``).

Each step the runner builds what upstream builds from a ``SchedulerOutput``:

* ``input_ids`` and ``positions`` of every scheduled token, requests packed back to back;
* ``query_start_loc`` (where each request's rows start) and ``seq_lens`` (its context length once
  this step's tokens are in);
* the block table (each request's physical block ids, from the KV cache manager) and the
  **slot mapping**: token at position ``p`` goes to slot ``table[p // block_size] * block_size +
  p % block_size``;
* ``logits_indices``: the last row of each request, the only row whose logits anyone reads.

A real model (anything with ``compute_logits``, e.g. ``mini_vllm.models.llama``) writes its K/V
through the slot mapping into per-layer caches ``[num_blocks, block_size, num_kv_heads,
head_dim]`` sized from the KV manager's block count, and attends through the block table. The
course's ``ToyModel`` (``forward(last_tokens, positions)``) runs behind the same runner and is
given the rows at ``logits_indices``, exactly as before.

For both, the runner also writes a fingerprint — the token and its position — into every slot it
fills, and before any row is computed checks that each request's context, read back through its
block table, is exactly that request's tokens. A scheduler that computes a token with no slot, a
block pool that hands one block to two requests, or a block freed and reused while a request
still reads it, all raise :class:`KVCacheError` naming the step, the request and the slot — never
a silently different token, not even with the toy model that ignores K/V.

Speculative decoding (``execute_model_spec``): a request's pending drafts
(``request.spec_token_ids``) are scheduled as ordinary rows after its last sampled token, so one
forward verifies all k (the k + 1 rows attend causally, like a short prefill chunk); their K/V and
fingerprints are written like any token's, and logits are computed for those k + 1 rows. A
rejected draft's slot is rewritten when the correction token lands at its position, and no one
reads past ``num_computed_tokens`` before that, so the fingerprint check holds unchanged.

Decode-batch padding (``cudagraph_capture_sizes``, off by default), as upstream's runner pads a
batch up to the size of a captured CUDA graph: in a step where every request computes one token,
a real model runs on the batch padded with dummy rows up to the smallest capture size that holds
it (a batch above the largest size runs unpadded: no graph would fit it). A dummy row is token 0
at position 0 with an empty (all null-block) table, writing its K/V to slot 0 of the null block
0, which no request ever holds. Upstream writes a padded token to ``PAD_SLOT_ID`` (-1, in
``vllm/v1/attention/backends/utils.py``) and the cache kernel skips it; a numpy index of -1 is
the *last* slot, a real request's, hence block 0. Logits are computed for the real rows only
(``logits_indices``), so the tokens do not change. ``num_padded_tokens`` counts the dummy rows,
``cudagraph_steps`` the decode steps run at each size (the first at a size would capture its
graph, the others replay it). No graph is captured here; ``mini_vllm.cudagraph`` models that
part.

LoRA (``LLMEngine(lora_config=...)``, phase 11): the engine sets ``lora_manager`` (a
``mini_vllm.lora.models.LoRAModelManager``; ``None`` otherwise). Around a real model's forward
pass it activates the step's adapters (the slot cache's ``ensure``, buffer slots filled) and tags
every token row with its request's slot, ``-1`` for base requests and padded rows; the model's
projections then add each row's adapter delta (upstream: ``LoRAModelRunnerMixin.set_active_loras``
before ``execute_model``). A step without adapter rows runs exactly as without LoRA.

Images (``LLMEngine(mm_config=...)``, phase 13): the engine sets ``mm_encoder`` (a
``mini_vllm.multimodal.FakeImageEncoder``; ``None`` otherwise, and then nothing below happens).
Each step first drops the encoder outputs the scheduler's encoder cache evicted
(``free_encoder_mm_hashes``), runs the encoder on the images the step schedules
(``scheduled_encoder_inputs``) into ``encoder_cache`` (content hash -> ``[length, hidden]``),
then hands the model, for every scheduled token inside an image's run, that image's row for the
position (``mm_embeds``). A token of an image whose output is not there raises
:class:`~mini_vllm.multimodal.EncoderCacheError` naming the step, request and image.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from mini_vllm.attention import AttentionBackend, AttentionMetadata
from mini_vllm.cudagraph import check_capture_sizes, select_capture_size
from mini_vllm.forward_context import set_forward_context
from mini_vllm.request import Request
from mini_vllm.scheduler import SchedulerOutput

_NEVER_WRITTEN = -1


class KVCacheError(AssertionError):
    """A step would read or write KV memory it does not own: a bug in the block pool, KV manager
    or scheduler, never in the request. An ``AssertionError``, like ``SchedulerContractError``, so
    pytest reports a broken invariant and code refusing bad input (``ValueError``) never hides it.
    """


@dataclass(frozen=True)
class ModelInputs:
    """Everything one forward pass needs, in upstream's names."""

    #: the scheduled requests, in row order (``SchedulerOutput.scheduled_requests``).
    requests: list[Request]
    input_ids: np.ndarray  # int64 [num_tokens]
    positions: np.ndarray  # int64 [num_tokens]
    attn_metadata: AttentionMetadata
    #: int64 [num_reqs]: row of each request's last scheduled token (its logits row).
    logits_indices: np.ndarray


def is_real_model(model: Any) -> bool:
    """A network over the paged cache (``forward(input_ids, positions, kv_caches, metadata)`` +
    ``compute_logits``), as opposed to the toy's ``forward(last_tokens, positions)``."""
    return hasattr(model, "compute_logits")


class ModelRunner:
    def __init__(self, model: Any, kv_cache_manager: Any, *, num_blocks: int,
                 block_size: int, attn_backend: AttentionBackend | None = None,
                 cudagraph_capture_sizes: Sequence[int] | None = None) -> None:
        self.model = model
        # Decode batches are padded up to one of these sizes (None: never padded).
        self.cudagraph_capture_sizes = _check_capture_sizes(cudagraph_capture_sizes, model)
        self.num_padded_tokens = 0
        self.cudagraph_steps: dict[int, int] = {}
        # The attention every layer of a real model calls (None: mini_vllm.attention's numpy one).
        self.attn_backend = attn_backend
        self.kv = kv_cache_manager
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.num_steps = 0
        num_slots = num_blocks * block_size
        # The fingerprint of what each slot holds: which token, at which position.
        self.slot_token_ids = np.full(num_slots, _NEVER_WRITTEN, dtype=np.int64)
        self.slot_positions = np.full(num_slots, _NEVER_WRITTEN, dtype=np.int64)
        self.kv_caches: list[tuple[np.ndarray, np.ndarray]] = []
        #: ``mini_vllm.lora.models.LoRAModelManager`` when the engine serves LoRA, else None.
        self.lora_manager: Any = None
        #: The image encoder when the engine takes images (phase 13), else None; its outputs.
        self.mm_encoder: Any = None
        self.encoder_cache: dict[str, np.ndarray] = {}
        if is_real_model(model):
            shape = (num_blocks, block_size, model.num_kv_heads, model.head_dim)
            # np.zeros maps pages lazily: blocks never written cost no memory.
            self.kv_caches = [(np.zeros(shape, model.dtype), np.zeros(shape, model.dtype))
                              for _ in range(model.num_layers)]

    # -- inputs ---------------------------------------------------------------------------------

    def prepare_inputs(self, output: SchedulerOutput) -> ModelInputs:
        """Flatten the plan into token rows, block tables and the slot mapping.

        Raises :class:`KVCacheError` when a scheduled token has no allocated slot.
        """
        requests = list(output.scheduled_requests)
        counts = [output.num_scheduled_tokens[r.request_id] for r in requests]
        starts = np.zeros(len(requests) + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        seq_lens = np.array([r.num_computed_tokens + n for r, n in zip(requests, counts,
                                                                       strict=True)],
                            dtype=np.int64)
        tables = [self._block_ids(r, int(s)) for r, s in zip(requests, seq_lens, strict=True)]
        block_table = np.zeros((len(requests), max(map(len, tables), default=0)), np.int64)
        for row, table in enumerate(tables):
            block_table[row, : len(table)] = table
        self._check_block_ids(requests, seq_lens, block_table)

        num_tokens = int(starts[-1])
        row_of_token = np.repeat(np.arange(len(requests)), counts)
        positions = (np.arange(num_tokens) - starts[row_of_token]
                     + (seq_lens - counts)[row_of_token])
        input_ids = np.empty(num_tokens, dtype=np.int64)
        for request, start, stop in zip(requests, starts[:-1], starts[1:], strict=True):
            first = request.num_computed_tokens
            input_ids[start:stop] = _token_ids(request)[first : first + (stop - start)]
        slot_mapping = (block_table[row_of_token, positions // self.block_size] * self.block_size
                        + positions % self.block_size)
        metadata = AttentionMetadata(
            query_start_loc=starts, seq_lens=seq_lens, block_table=block_table,
            slot_mapping=slot_mapping, block_size=self.block_size,
        )
        return ModelInputs(requests, input_ids, positions, metadata, starts[1:] - 1)

    def _block_ids(self, request: Request, seq_len: int) -> list[int]:
        """The request's block ids, after checking they cover ``seq_len`` tokens and are live."""
        rid = request.request_id
        ids = self.kv.get_block_ids(rid)
        needed = -(-seq_len // self.block_size)
        if len(ids) < needed:
            first = len(ids) * self.block_size
            raise KVCacheError(
                f"step {self.num_steps}: request {rid!r} computes up to position {seq_len - 1} "
                f"but its block table {ids} covers only {first} tokens: position {first} has no "
                f"KV slot (was allocate_slots called for this request before scheduling it?)"
            )
        if hasattr(self.kv, "get_blocks"):
            stale = [b for b in self.kv.get_blocks(rid) if b.ref_cnt < 1]
            if stale:
                raise KVCacheError(
                    f"step {self.num_steps}: request {rid!r} still references block "
                    f"{stale[0].block_id}, but the pool says ref_cnt={stale[0].ref_cnt}: it was "
                    f"freed while in use and may be handed to another request"
                )
        return ids

    def _check_block_ids(self, requests: list[Request], seq_lens: np.ndarray,
                         block_table: np.ndarray) -> None:
        """Every block a request reads must be a real one: 1..num_blocks-1 (0 is the null block)."""
        needed = -(-seq_lens // self.block_size)
        used = np.arange(block_table.shape[1])[None, :] < needed[:, None]
        bad = used & ((block_table < 1) | (block_table >= self.num_blocks))
        if bad.any():
            row, index = (int(i[0]) for i in np.nonzero(bad))
            raise KVCacheError(
                f"step {self.num_steps}: request {requests[row].request_id!r}'s block table "
                f"{block_table[row, : needed[row]].tolist()} holds block {block_table[row, index]} "
                f"at index {index}: a request may only hold blocks 1..{self.num_blocks - 1} "
                f"(block 0 is the null block)"
            )

    # -- the fingerprint check --------------------------------------------------------------------

    def _write_and_check_fingerprints(self, inputs: ModelInputs) -> None:
        """Record what this step writes, then check every request's whole context reads back as
        its own tokens, position by position."""
        meta = inputs.attn_metadata
        slots = meta.slot_mapping
        unique, first_index, counts = np.unique(slots, return_index=True, return_counts=True)
        if (counts > 1).any():
            slot = int(unique[counts > 1][0])
            rows = np.flatnonzero(slots == slot)
            owners = [self._owner(inputs, int(r)) for r in rows]
            raise KVCacheError(
                f"step {self.num_steps}: slot {slot} (block {slot // self.block_size}) is written "
                f"twice in one step, by {owners}: one block was handed to two requests"
            )
        self.slot_token_ids[slots] = inputs.input_ids
        self.slot_positions[slots] = inputs.positions

        seq_lens = meta.seq_lens
        row = np.repeat(np.arange(len(seq_lens)), seq_lens)
        ctx_start = np.zeros(len(seq_lens), dtype=np.int64)
        np.cumsum(seq_lens[:-1], out=ctx_start[1:])
        pos = np.arange(int(seq_lens.sum())) - ctx_start[row]
        ctx_slots = (meta.block_table[row, pos // self.block_size] * self.block_size
                     + pos % self.block_size)
        expected = np.concatenate([
            np.asarray(_token_ids(r)[: int(n)], dtype=np.int64)
            for r, n in zip(inputs.requests, seq_lens, strict=True)
        ]) if len(seq_lens) else np.empty(0, np.int64)
        ok = (self.slot_token_ids[ctx_slots] == expected) & (self.slot_positions[ctx_slots] == pos)
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            request = inputs.requests[int(row[bad])]
            slot, p = int(ctx_slots[bad]), int(pos[bad])
            held_token, held_pos = int(self.slot_token_ids[slot]), int(self.slot_positions[slot])
            held = ("nothing: it was never written" if held_token == _NEVER_WRITTEN
                    else f"token {held_token} of position {held_pos}")
            raise KVCacheError(
                f"step {self.num_steps}: request {request.request_id!r} reads position {p} "
                f"(token {int(expected[bad])}) from slot {slot} (block {slot // self.block_size}, "
                f"offset {slot % self.block_size}), which holds {held}. Its K/V is not there: "
                f"the block was freed and reused while the request still held it, given to two "
                f"requests, or counted as computed without being computed"
            )

    @staticmethod
    def _owner(inputs: ModelInputs, token_row: int) -> str:
        request_row = int(np.searchsorted(inputs.attn_metadata.query_start_loc, token_row,
                                          side="right") - 1)
        return inputs.requests[request_row].request_id

    # -- the forward pass -------------------------------------------------------------------------

    def execute_model(self, output: SchedulerOutput) -> np.ndarray:
        """Run the model on a non-empty plan; logits row ``i`` is scheduled request ``i``'s."""
        inputs = self.prepare_inputs(output)
        if self.mm_encoder is not None:
            self._execute_mm_encoder(output)
        return self._run(inputs, inputs.logits_indices)

    # -- images (phase 13) ----------------------------------------------------------------------

    def _execute_mm_encoder(self, output: SchedulerOutput) -> None:
        """Drop evicted encoder outputs, then encode this step's scheduled images."""
        for mm_hash in getattr(output, "free_encoder_mm_hashes", ()):
            self.encoder_cache.pop(mm_hash, None)
        scheduled = getattr(output, "scheduled_encoder_inputs", {})
        for request in output.scheduled_requests:
            for mm_hash in scheduled.get(request.request_id, ()):
                feature = next(f for f in request.mm_features if f.mm_hash == mm_hash)
                self.encoder_cache[mm_hash] = self.mm_encoder.encode(feature.data)

    def _gather_mm_embeddings(self, inputs: ModelInputs) -> tuple[np.ndarray, np.ndarray] | None:
        """``(is_multimodal, embeds)`` for this step's image positions, or None if it has none."""
        from mini_vllm.multimodal.encoder_cache import EncoderCacheError

        starts = inputs.attn_metadata.query_start_loc
        is_multimodal = np.zeros(len(inputs.input_ids), dtype=bool)
        rows: list[np.ndarray] = []
        for index, request in enumerate(inputs.requests):
            features = getattr(request, "mm_features", None)
            if not features:
                continue
            start, stop = int(starts[index]), int(starts[index + 1])
            first = int(inputs.positions[start]) if stop > start else 0
            last = first + (stop - start)
            for f in features:
                lo, hi = max(f.offset, first), min(f.mm_position.end, last)
                if lo >= hi:
                    continue
                embeds = self.encoder_cache.get(f.mm_hash)
                if embeds is None:
                    raise EncoderCacheError(
                        f"step {self.num_steps}: request {request.request_id!r} computes "
                        f"positions {lo}..{hi - 1} of image {f.mm_hash[:12]} (run {f.offset}.."
                        f"{f.mm_position.end - 1}), but that image was never encoded or was "
                        f"evicted: the encoder scheduling rule let the chunk into an image "
                        f"without its encoding")
                is_multimodal[start + lo - first : start + hi - first] = True
                rows.append(embeds[lo - f.offset : hi - f.offset])
        if not rows:
            return None
        return is_multimodal, np.concatenate(rows)

    def execute_model_spec(self, output: SchedulerOutput) -> list[np.ndarray]:
        """Speculative decoding's forward: per scheduled request, the logits of its last
        ``1 + len(spec_token_ids)`` rows (``[k + 1, vocab]``: row ``i`` scores the token after
        draft ``i - 1``); one row for a request without drafts."""
        inputs = self.prepare_inputs(output)
        counts = np.array([1 + len(r.spec_token_ids) for r in inputs.requests], dtype=np.int64)
        ends = inputs.logits_indices + 1
        rows = np.concatenate([np.arange(e - c, e) for e, c in zip(ends, counts, strict=True)])
        logits = self._run(inputs, rows)
        return np.split(np.asarray(logits), np.cumsum(counts)[:-1])

    def _run(self, inputs: ModelInputs, rows: np.ndarray) -> np.ndarray:
        """Check and record the fingerprints, run the model, return the logits of ``rows``."""
        self._write_and_check_fingerprints(inputs)
        if is_real_model(self.model):
            input_ids, positions, metadata = self._pad_decode_batch(inputs)
            lora = nullcontext() if self.lora_manager is None else self.lora_manager.step(
                inputs.requests, np.diff(inputs.attn_metadata.query_start_loc), len(input_ids))
            mm = None if self.mm_encoder is None else self._gather_mm_embeddings(inputs)
            with set_forward_context(self.attn_backend), lora:
                if mm is None:
                    hidden = self.model.forward(input_ids, positions, self.kv_caches, metadata)
                else:  # padded rows (a decode-sized batch) are text rows
                    mask = np.zeros(len(input_ids), dtype=bool)
                    mask[: len(mm[0])] = mm[0]
                    hidden = self.model.forward(input_ids, positions, self.kv_caches, metadata,
                                                mm_embeds=(mask, mm[1]))
            logits = self.model.compute_logits(hidden[rows])  # padded rows are never read
        else:
            logits = self.model.forward(inputs.input_ids[rows].tolist(),
                                        inputs.positions[rows].tolist())
        shape = np.shape(logits)
        if len(shape) != 2 or shape[0] != len(rows):  # row i must be input i's, so count them
            raise ValueError(f"step {self.num_steps}: the model returned logits of shape {shape} "
                             f"for {len(rows)} input rows; forward must return one row per "
                             f"input, [{len(rows)}, vocab_size], row i for input i")
        self.num_steps += 1
        return logits

    def _pad_decode_batch(self, inputs: ModelInputs
                          ) -> tuple[np.ndarray, np.ndarray, AttentionMetadata]:
        """The forward pass's inputs: this step's own, or, for a decode-only step with capture
        sizes set, the same followed by dummy rows up to the smallest size that holds them."""
        meta = inputs.attn_metadata
        num_reqs = meta.num_reqs
        unpadded = inputs.input_ids, inputs.positions, meta
        if self.cudagraph_capture_sizes is None or len(inputs.input_ids) != num_reqs:
            return unpadded  # no ladder, or a prefill (chunk) in the batch
        size = select_capture_size(num_reqs, self.cudagraph_capture_sizes)
        if size is None:
            return unpadded  # larger than every captured size: runs eagerly, unpadded
        self.cudagraph_steps[size] = self.cudagraph_steps.get(size, 0) + 1
        pad = size - num_reqs
        if not pad:
            return unpadded
        self.num_padded_tokens += pad
        zeros = np.zeros(pad, np.int64)
        padded = AttentionMetadata(
            # One query row per dummy request, appended after the real ones.
            query_start_loc=np.concatenate([meta.query_start_loc,
                                            meta.query_start_loc[-1] + np.arange(1, pad + 1)]),
            seq_lens=np.concatenate([meta.seq_lens, zeros + 1]),
            block_table=np.concatenate([meta.block_table,
                                        np.zeros((pad, meta.block_table.shape[1]), np.int64)]),
            slot_mapping=np.concatenate([meta.slot_mapping, zeros]),  # the null block's slot 0
            block_size=meta.block_size,
        )
        return (np.concatenate([inputs.input_ids, zeros]),
                np.concatenate([inputs.positions, zeros]), padded)


def _token_ids(request: Request) -> list[int]:
    """The request's tokens as this step computes them: verified ones, then any drafts."""
    if request.spec_token_ids:
        return request.all_token_ids + request.spec_token_ids
    return request.all_token_ids


def _check_capture_sizes(sizes: Sequence[int] | None, model: Any) -> tuple[int, ...] | None:
    """Sorted, de-duplicated capture sizes; ``ValueError`` for bad ones or a toy model."""
    checked = check_capture_sizes(sizes, "cudagraph_capture_sizes")
    if checked is not None and not is_real_model(model):
        raise ValueError("cudagraph_capture_sizes pads a real model's decode batch; the toy "
                         "model's forward(last_tokens, positions) has no batch to pad")
    return checked
