"""The pristine store (``katas/pristine.json``) is what ``katas reset`` restores: every stub as the
project ships it. It must equal the stub in ``katas/`` on a clean checkout.

An authors' check: a learner's edited stub differs from the store by design, so this runs only
in CI (``CI`` set) or when ``KATAS_AUTHOR_CHECKS=1`` (tox sets it); a learner's ``pytest`` skips
it and stays meaningful."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_vllm_katas.catalog import discover
from pytest_vllm_katas.devcheck import AUTHOR_CHECKS
from pytest_vllm_katas.reset import SNAPSHOT_COMMAND, STORE, pristine_text

ROOT = Path(__file__).resolve().parents[1]
KATAS = discover(ROOT, skip_invalid=True)


@pytest.mark.skipif(not AUTHOR_CHECKS, reason="authors' check (your stubs differ from the "
                    "shipped ones by design): runs in CI or with KATAS_AUTHOR_CHECKS=1")
@pytest.mark.parametrize("kata", KATAS, ids=[k.id for k in KATAS])
def test_pristine_copy_matches_the_stub(kata) -> None:
    if not kata.stub_path.is_file():
        pytest.skip(f"{kata.id} has no stub yet (test_kata_contract reports it)")
    stored = pristine_text(kata)
    where = f"{STORE} [{kata.id}]"
    assert stored is not None, f"{where} is missing: kata authors run `{SNAPSHOT_COMMAND} " \
                               f"{kata.slug}`"
    assert stored == kata.stub_path.read_text(encoding="utf-8"), (
        f"{kata.stub_path.relative_to(ROOT)} differs from {where}. Kata author: run "
        f"`{SNAPSHOT_COMMAND} {kata.slug}`. Learner: expected while you work on it "
        f"(`katas reset {kata.slug}` restores the stub)"
    )
