from __future__ import annotations

from mini_vllm import EOS_TOKEN_ID, ByteTokenizer, Request, RequestStatus, SamplingParams


def test_status_order_puts_every_finished_state_after_preempted() -> None:
    order = [s.name for s in sorted(RequestStatus)]
    assert order[:5] == ["WAITING", "RUNNING", "PREEMPTED", "FINISHED_STOPPED", "FINISHED_LENGTH"]
    assert [RequestStatus.is_finished(s) for s in RequestStatus] == [False] * 3 + [True] * 3


def test_eos_on_the_length_boundary_reports_stop() -> None:
    req = Request([1], SamplingParams(max_tokens=2))
    req.append_output_token(7)
    assert not req.maybe_finish()
    req.append_output_token(EOS_TOKEN_ID)
    assert req.maybe_finish() and req.status == RequestStatus.FINISHED_STOPPED
    assert req.output_token_ids == [7, EOS_TOKEN_ID] and req.num_output_tokens == 2


def test_ignore_eos_disables_only_the_eos_check() -> None:
    req = Request([1], SamplingParams(max_tokens=3, ignore_eos=True))
    for t in (EOS_TOKEN_ID, EOS_TOKEN_ID):
        req.append_output_token(t)
        assert not req.maybe_finish()
    req.append_output_token(5)
    assert req.maybe_finish() and req.status == RequestStatus.FINISHED_LENGTH


def test_counters_follow_tokens() -> None:
    req = Request([1, 2, 3])
    req.append_output_token(4)
    assert (req.num_tokens, req.num_prompt_tokens, req.all_token_ids) == (4, 3, [1, 2, 3, 4])


def test_tokenizer_is_one_byte_one_token_and_decode_skips_eos() -> None:
    tok = ByteTokenizer()
    assert len(tok.encode("hello world")) == 11 and len(tok.encode("S" * 64)) == 64
    assert tok.decode(tok.encode("héllo") + [EOS_TOKEN_ID]) == "héllo"
