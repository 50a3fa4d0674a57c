"""HFTokenizer: a Hugging Face tokenizer directory read with ``tokenizers`` and jinja2 alone.

On the live tier's byte tokenizer directory (built here, no download) it must agree with
mini_vllm's ByteTokenizer; on SmolLM2 (once ``katas models fetch`` has run) with transformers'
AutoTokenizer, id for id and character for character of the chat prompt.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")

from mini_vllm.tokenizer import (  # noqa: E402
    CHAT_TEMPLATE_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
    ByteTokenizer,
    HFTokenizer,
    get_tokenizer,
    special_tokens_post_processor,
)
from pytest_vllm_katas.live import models  # noqa: E402

TEXTS = [
    "", "a", "Hello, world!", "hello world", " leading space", "trailing space ", "  two  spaces",
    "\ttab\tseparated", "line one\nline two\n", "windows\r\nnewlines\r\n", "\n\n\n", "   ",
    "What is the capital of France?", "The capital of France is Paris.",
    "I'm sure you'll see they've gone, isn't it?", "CAPITALS AND lower", "camelCaseIdentifier",
    "snake_case_identifier = 42", "2024-12-03", "3.14159 2.71828 1e-5", "1234567890",
    "$100 + 20% = ???", "email@example.com", "https://example.com/path?q=1&r=2#frag",
    "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) { s += a[i]; }",
    '{"key": [1, 2, {"nested": null}]}', "<div class=\"x\">&amp;</div>", "# Title\n\n- item\n",
    "café naïve résumé", "straße Größe", "日本語のテキスト", "中文文本测试", "한국어",
    "Привет, мир",
    "مرحبا بالعالم", "emoji 🙂🚀👍🏽", "∑ ∫ √ ∞ ≠ ≤", "“curly quotes” and ‘single’", "em—dash – en",
    "zero\u200bwidth", "ünïcödé" * 5, "x" * 300, "the " * 50, "<|im_start|>user\nhi<|im_end|>\n",
    "<|endoftext|>", "text<|im_end|>more", "<|im_start|", "<repo_name>vllm<file_sep>",
    "Ġ Ċ literal byte-level letters",
]

CONVERSATIONS = {
    "one turn": [{"role": "user", "content": "What is the capital of France?"}],
    "two turns": [
        {"role": "system", "content": "You answer in one sentence."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "And of Italy?"},
    ],
}


# --- the byte tokenizer directory of the live tier's tiny Llama (core: no transformers) ---


@pytest.fixture(scope="module")
def byte_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("byte-tokenizer")
    models.build_byte_tokenizer(out)
    return out


def test_byte_directory_encodes_like_the_byte_tokenizer(byte_dir: Path) -> None:
    tok, ref = get_tokenizer(byte_dir), ByteTokenizer()
    assert isinstance(tok, HFTokenizer), "tokenizer.json present: get_tokenizer must read it"
    for text in TEXTS:
        if "<|" in text:
            continue  # specials are one token here, bytes in ByteTokenizer
        assert tok.encode(text) == ref.encode(text), f"ids of {text!r} are not its UTF-8 bytes"
        assert tok.decode(tok.encode(text)) == text, f"{text!r} does not round-trip"
    assert tok.eos_token_id == ref.eos_token_id == 256
    assert tok.vocab_size == models.TOKENIZER_VOCAB


def test_byte_directory_keeps_special_tokens_whole(byte_dir: Path) -> None:
    tok = HFTokenizer(byte_dir)
    ids = tok.encode("<|im_start|>hi<|im_end|><|endoftext|>")
    assert ids == [257, 104, 105, 258, 256], f"special tokens were split into bytes: {ids}"
    assert tok.decode(ids) == "hi", "decode must skip special tokens by default"
    assert tok.decode(ids, skip_special_tokens=False) == "<|im_start|>hi<|im_end|><|endoftext|>"


def test_byte_directory_chat_template(byte_dir: Path) -> None:
    tok = HFTokenizer(byte_dir)
    chat = tok.apply_chat_template(CONVERSATIONS["one turn"])
    assert chat == "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n" \
                   "<|im_start|>assistant\n"
    no_prompt = tok.apply_chat_template(CONVERSATIONS["one turn"], add_generation_prompt=False)
    assert not no_prompt.endswith("assistant\n"), "add_generation_prompt=False must leave it out"


def test_directory_without_tokenizer_json_gets_the_byte_tokenizer(tmp_path: Path) -> None:
    assert isinstance(get_tokenizer(tmp_path), ByteTokenizer)


def _copy(byte_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "tok"
    shutil.copytree(byte_dir, out)
    return out


def _edit_config(directory: Path, **changes: object) -> None:
    path = directory / TOKENIZER_CONFIG_FILE
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _add_bos(directory: Path) -> None:
    """Make tokenizer.json's post-processor prepend <|im_start|>, as a BOS-adding model's does."""
    from tokenizers import Tokenizer

    path = directory / TOKENIZER_FILE
    tok = Tokenizer.from_file(str(path))
    tok.post_processor = special_tokens_post_processor(bos=("<|im_start|>", 257))
    tok.save(str(path))
    _edit_config(directory, bos_token="<|im_start|>")


def test_bos_is_added_by_the_post_processor_only(byte_dir: Path, tmp_path: Path) -> None:
    out = _copy(byte_dir, tmp_path)
    _edit_config(out, bos_token="<|im_start|>", add_bos_token=True)
    assert HFTokenizer(out).encode("hi") == [104, 105], (
        "add_bos_token in tokenizer_config.json is ignored beside a tokenizer.json (transformers 5)"
    )
    _add_bos(out)
    assert HFTokenizer(out).encode("hi") == [257, 104, 105], "tokenizer.json asks for BOS first"


HELPERS_TEMPLATE = (
    "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools') }}"
    "{% endif %}{% generation %}{{ m | tojson }}{% endgeneration %}\n{% endfor %}"
    "{{ eos_token }}"
)


@pytest.fixture
def helpers_dir(byte_dir: Path, tmp_path: Path) -> Path:
    out = _copy(byte_dir, tmp_path)
    (out / CHAT_TEMPLATE_FILE).write_text(HELPERS_TEMPLATE)
    return out


def test_template_helpers_behave_like_transformers(helpers_dir: Path) -> None:
    tok = HFTokenizer(helpers_dir)
    chat = tok.apply_chat_template([{"role": "user", "content": "<b>é</b>"}])
    assert chat == '{"role": "user", "content": "<b>é</b>"}<|endoftext|>', (
        "tojson must not escape HTML or non-ASCII, trim_blocks must eat the newline after a tag, "
        "and special tokens are template variables"
    )
    import jinja2

    with pytest.raises(jinja2.TemplateError, match="no tools"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}])


def test_template_helpers_equal_transformers(helpers_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(helpers_dir)
    messages = [{"role": "user", "content": "<b>é</b> \"quoted\"\n"}]
    want = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert HFTokenizer(helpers_dir).apply_chat_template(messages) == want


@pytest.mark.parametrize("add_bos", [False, True], ids=["as-built", "bos-added"])
def test_byte_directory_equals_transformers(byte_dir, tmp_path, add_bos: bool) -> None:
    transformers = pytest.importorskip("transformers")
    out = _copy(byte_dir, tmp_path)
    _edit_config(out, add_bos_token=True)  # ignored by both
    if add_bos:
        _add_bos(out)
    ours, theirs = HFTokenizer(out), transformers.AutoTokenizer.from_pretrained(out)
    for text in TEXTS:
        assert ours.encode(text) == theirs(text).input_ids, f"ids of {text!r} differ"
    for name, messages in CONVERSATIONS.items():
        want = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert ours.apply_chat_template(messages) == want, f"the {name} prompt differs"


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda d: (d / TOKENIZER_FILE).write_text("{not json"), TOKENIZER_FILE),
        (lambda d: (d / TOKENIZER_CONFIG_FILE).unlink(), TOKENIZER_CONFIG_FILE),
        (lambda d: (d / TOKENIZER_CONFIG_FILE).write_text("[1, 2"), TOKENIZER_CONFIG_FILE),
        (lambda d: _edit_config(d, eos_token="<|nope|>"), TOKENIZER_CONFIG_FILE),
    ],
    ids=["corrupt-tokenizer-json", "missing-config", "corrupt-config", "unknown-eos"],
)
def test_broken_files_are_a_value_error_naming_the_file(byte_dir, tmp_path, damage, named) -> None:
    out = _copy(byte_dir, tmp_path)
    damage(out)
    with pytest.raises(ValueError, match=named):
        HFTokenizer(out)


def test_missing_chat_template_names_the_file(byte_dir: Path, tmp_path: Path) -> None:
    out = _copy(byte_dir, tmp_path)
    (out / CHAT_TEMPLATE_FILE).unlink()
    _edit_config(out, chat_template=None)
    with pytest.raises(ValueError, match=TOKENIZER_CONFIG_FILE):
        HFTokenizer(out).apply_chat_template(CONVERSATIONS["one turn"])


# --- SmolLM2 (after `katas models fetch`) ---


@pytest.fixture(scope="module")
def smollm2() -> HFTokenizer:
    if not models.smollm2_available():
        pytest.skip(models.smollm2_missing_reason())
    return HFTokenizer(models.smollm2_path())


def test_smollm2_round_trips_and_knows_its_specials(smollm2: HFTokenizer) -> None:
    for text in TEXTS:
        ids = smollm2.encode(text)
        assert smollm2.decode(ids, skip_special_tokens=False) == text, f"{text!r} changed"
    assert smollm2.eos_token_id == 2, "SmolLM2's EOS is <|im_end|> (id 2)"
    assert smollm2.vocab_size == 49152
    assert smollm2.encode("<|im_start|>") == [1], "no BOS is added, and specials stay whole"


def test_smollm2_chat_prompt(smollm2: HFTokenizer) -> None:
    assert smollm2.apply_chat_template(CONVERSATIONS["one turn"]) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


@pytest.fixture(scope="module")
def transformers_smollm2(smollm2: HFTokenizer):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(models.smollm2_path())


def test_smollm2_ids_equal_transformers(smollm2: HFTokenizer, transformers_smollm2) -> None:
    for text in TEXTS:
        want = transformers_smollm2(text).input_ids
        assert smollm2.encode(text) == want, f"ids of {text!r} differ from transformers'"
        assert smollm2.decode(want) == transformers_smollm2.decode(want, skip_special_tokens=True)


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=list(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_smollm2_chat_template_equals_transformers(
    smollm2: HFTokenizer, transformers_smollm2, conversation: str, add_generation_prompt: bool
) -> None:
    messages = CONVERSATIONS[conversation]
    want = transformers_smollm2.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    got = smollm2.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    assert got == want, f"the {conversation} prompt differs from transformers'"
