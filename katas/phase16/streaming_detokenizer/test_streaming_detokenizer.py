"""Spec for kata 16-03: a streaming detokenizer never emits a broken character.

Part one is the course's lab on mini_vllm's ``ByteTokenizer`` (one token per byte, EOS = 256).
Part two hands the same detokenizer a token id -> bytes table: random segmentations of a
multilingual text (always run), then SmolLM2-135M's byte-level BPE, whose tokens really do cut
characters in half (skipped until ``katas models fetch`` has been run).
"""

from __future__ import annotations

import random

import pytest

from pytest_vllm_katas import expect_raises

pytestmark = pytest.mark.cpu_ok

ROCKET = "\U0001F680"  # 🚀: F0 9F 9A 80
MIXED = "naïve café — 你好 🚀🇫🇷"  # the course's string: 2-, 3- and 4-byte characters
EOS = 256
BAD = "\ufffd"


def stream(det, token_ids) -> list[str]:
    """What ``feed`` returned for each id, in order."""
    return [det.feed(t) for t in token_ids]


def naive_decode_each(token_ids) -> list[str]:
    """The bug the lab exists to fix: decode every token on its own."""
    return [bytes([t]).decode("utf-8", errors="replace") for t in token_ids]


# -- the UTF-8 length table -------------------------------------------------------------------


def test_utf8_expected_len_for_each_lead_pattern(impl) -> None:
    cases = {0x00: 1, 0x41: 1, 0x7F: 1, 0xC3: 2, 0xDF: 2, 0xE0: 3, 0xE4: 3, 0xEF: 3,
             0xF0: 4, 0xF4: 4}
    got = {b: impl.utf8_expected_len(b) for b in cases}
    assert got == cases, (
        "0xxxxxxx announces 1 byte, 110xxxxx 2, 1110xxxx 3, 11110xxx 4; "
        f"expected {cases}, got {got}")
    for ch in MIXED:
        data = ch.encode()
        n = impl.utf8_expected_len(data[0])
        assert n == len(data), f"{ch!r} is {len(data)} bytes, its lead byte {data[0]:#x} gave {n}"


def test_bytes_that_cannot_start_a_character_return_0(impl) -> None:
    cases = [0x80, 0x9F, 0xBF, 0xF8, 0xFF]
    got = {b: impl.utf8_expected_len(b) for b in cases}
    assert got == dict.fromkeys(cases, 0), (
        "continuation bytes (10xxxxxx) and 11111xxx start no character: expected 0 for each, "
        f"got {got}")


def test_utf8_expected_len_rejects_non_bytes(impl) -> None:
    for value in (256, -1):
        with expect_raises(ValueError, f"{value} is not a byte value (0..255)", match="byte"):
            impl.utf8_expected_len(value)


# -- the course's streaming tests -------------------------------------------------------------


def test_ascii_streams_one_char_per_token(impl) -> None:
    det = impl.StreamingDetokenizer()
    got = stream(det, b"hello")
    assert got == list("hello"), (
        f"ASCII is complete at every byte: expected one character per token, got {got}")


def test_emoji_is_held_until_complete(impl) -> None:
    det = impl.StreamingDetokenizer()
    got = stream(det, ROCKET.encode())
    assert got == ["", "", "", ROCKET], (
        f"a 4-byte character: three silences, then the rocket; got {got}")


def test_each_length_waits_exactly_its_length(impl) -> None:
    for ch, expected in (("é", ["", "é"]), ("你", ["", "", "你"]), ("a", ["a"])):
        det = impl.StreamingDetokenizer()
        got = stream(det, ch.encode())
        assert got == expected, f"{ch!r} ({len(ch.encode())} bytes): expected {expected}, got {got}"


def test_never_emits_replacement_chars_for_valid_text(impl) -> None:
    det = impl.StreamingDetokenizer()
    pieces = stream(det, MIXED.encode())
    tail = det.flush()
    bad = [p for p in pieces if BAD in p]
    assert not bad, f"valid UTF-8 must never stream U+FFFD; these pieces had it: {bad}"
    assert "".join(pieces) == MIXED, (
        f"concatenated pieces must be the whole text {MIXED!r}, got {''.join(pieces)!r}")
    assert tail == "", f"nothing is left to flush after complete text, got {tail!r}"


def test_naive_approach_really_is_broken(impl) -> None:
    ids = list(ROCKET.encode())
    ours = stream(impl.StreamingDetokenizer(), ids)
    naive = naive_decode_each(ids)
    assert ours == ["", "", "", ROCKET], (
        f"the detokenizer should give three silences and a rocket, got {ours}")
    # The control: decoding per token really does produce garbage, four times.
    assert len(naive) == 4 and all(BAD in piece for piece in naive), naive
    assert "".join(naive) != ROCKET, "per-token decoding should have lost the rocket"


def test_flush_handles_truncated_sequence(impl) -> None:
    det = impl.StreamingDetokenizer()
    pieces = stream(det, b"ok" + ROCKET.encode()[:3])
    assert pieces == ["o", "k", "", "", ""], (
        f"'ok' streams at once, the three bytes of an unfinished rocket wait; got {pieces}")
    tail = det.flush()
    assert tail == BAD, (
        "a stream cut inside a character must end with one honest U+FFFD at flush, "
        f"not be hidden or raise; got {tail!r}")


def test_flush_empties_the_buffer(impl) -> None:
    det = impl.StreamingDetokenizer()
    stream(det, "é".encode()[:1])
    first, second = det.flush(), det.flush()
    assert (first, second) == (BAD, ""), (
        f"flush hands over the remnant once and empties the buffer: expected ('{BAD}', ''), "
        f"got {(first, second)!r}")
    again = stream(det, "é".encode())
    assert again == ["", "é"], f"after flush the detokenizer starts clean; got {again}"


def test_eos_is_ignored(impl) -> None:
    det = impl.StreamingDetokenizer()
    assert det.feed(EOS) == "", "EOS (256) spells no text: feed must return ''"
    data = ROCKET.encode()
    got = stream(det, [data[0], data[1], EOS, data[2], data[3], EOS])
    assert got == ["", "", "", "", ROCKET, ""], (
        f"an EOS in the middle of a character must neither break nor emit it; got {got}")
    assert det.flush() == "", "nothing should be left after the rocket completed"


def test_unknown_id_is_rejected(impl) -> None:
    det = impl.StreamingDetokenizer()
    for bad_id in (257, -1):
        with expect_raises(ValueError, f"id {bad_id} is not in the ByteTokenizer's vocabulary "
                           "(0..256)", match=str(bad_id)):
            det.feed(bad_id)


def test_stray_continuation_byte_is_not_held(impl) -> None:
    det = impl.StreamingDetokenizer()
    got = stream(det, [0x80, ord("a")])
    assert got == [BAD, "a"], (
        "a continuation byte with no lead can never become a character: emit U+FFFD at once "
        f"and keep streaming; got {got}")


# -- part two: a token id -> bytes table ------------------------------------------------------


def test_multi_byte_tokens_emit_what_is_complete(impl) -> None:
    table = [b"na", b"\xc3\xafve", b" \xf0\x9f", b"\x9a", b"\x80!", b""]
    det = impl.StreamingDetokenizer(table)
    got = stream(det, [0, 1, 5, 2, 3, 4])
    assert got == ["na", "ïve", "", " ", "", ROCKET + "!"], (
        "each token spells its bytes; everything before an unfinished character is emitted at "
        f"once (the space of b' \\xf0\\x9f'), the rest waits; got {got}")


def test_random_token_splits_stream_the_text(impl) -> None:
    """Property: however the bytes are cut into tokens, the stream is the text, never broken,
    and as eager as possible (everything whose bytes are complete is out)."""
    data = (MIXED + " 日本語 ąę 😀😃 ok").encode()
    rng = random.Random(1603)
    for trial in range(200):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, len(data) - 1)))
        bounds = [0, *cuts, len(data)]
        table = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        det = impl.StreamingDetokenizer(table)
        out = ""
        for k in range(len(table)):
            out += det.feed(k)
            expected = data[: bounds[k + 1]].decode("utf-8", errors="ignore")
            assert out == expected, (
                f"trial {trial}, after token {k} (cuts {cuts[:8]}...): emitted {out!r}, but "
                f"the complete characters so far are {expected!r}")
        out += det.flush()
        assert out == data.decode(), f"trial {trial}: the stream lost or garbled text: {out!r}"


# -- SmolLM2's byte-level BPE ------------------------------------------------------------------

BPE_TEXTS = [MIXED, "日本語のテキスト", "😀😃🎉 ok", "Ünïcödé ąę — ¿qué?"]


@pytest.fixture(scope="module")
def smollm2(smollm2_tokenizer):
    from mini_vllm.structured_output import token_bytes

    return smollm2_tokenizer, token_bytes(smollm2_tokenizer)


def _is_valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_smollm2_stream_equals_one_shot_decode_on_every_prefix(impl, smollm2) -> None:
    tokenizer, table = smollm2
    split_tokens = 0
    for text in BPE_TEXTS:
        ids = tokenizer.encode(text)
        det = impl.StreamingDetokenizer(table)
        whole = tokenizer.decode(ids)
        out, raw = "", b""
        for k, token_id in enumerate(ids):
            out += det.feed(token_id)
            raw += table[token_id]
            expected = raw.decode("utf-8", errors="ignore")
            assert BAD not in out and out == expected, (
                f"{text!r} after {k + 1} of {len(ids)} SmolLM2 tokens: emitted {out!r}, the "
                f"complete characters so far are {expected!r}")
            assert whole.startswith(out), f"{out!r} is not a prefix of the decode {whole!r}"
        out += det.flush()
        assert out == whole, f"{text!r}: stream {out!r} != tokenizer.decode {whole!r}"
        split_tokens += sum(not _is_valid_utf8(table[t]) for t in ids)
    # The fixture is meaningful only if BPE really cuts characters across tokens.
    assert split_tokens >= 10, (
        f"expected SmolLM2 to split many characters across tokens, found {split_tokens} tokens")


def test_smollm2_special_tokens_spell_nothing(impl, smollm2) -> None:
    tokenizer, table = smollm2
    det = impl.StreamingDetokenizer(table)
    ids = tokenizer.encode(ROCKET)
    got = [det.feed(t) for t in [ids[0], tokenizer.eos_token_id, *ids[1:]]]
    assert "".join(got) == ROCKET and got[:-1] == [""] * (len(got) - 1), (
        f"the EOS id between the rocket's tokens spells nothing; got {got}")
    with expect_raises(ValueError, "an id past the vocabulary is a bug upstream, not text",
                       match=str(len(table))):
        det.feed(len(table))
