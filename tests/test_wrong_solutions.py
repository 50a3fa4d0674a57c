"""The grader tests itself: every kata's known-wrong solutions (``wrong.toml``) are caught, each by
the test it names. One ``--katas-check=wrong`` run of the whole kata suite, in a subprocess;
``katas dev check <kata>`` does the same (and more) for one kata."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_vllm_katas.catalog import Kata, discover
from pytest_vllm_katas.devcheck import (
    AUTHOR_CHECKS,
    AUTHOR_CHECKS_SKIP_REASON,
    judge_wrong,
    run_suite_once,
)
from pytest_vllm_katas.variants import MIN_WRONG, load_wrong_solutions

ROOT = Path(__file__).resolve().parents[1]
KATAS = discover(ROOT, skip_invalid=True)
IDS = [k.id for k in KATAS]


@pytest.fixture(scope="session")
def wrong_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    # Alone, it spreads over two processes; under `pytest -n` the other workers are busy already
    # (and only one of them runs it: run_suite_once).
    spread = [] if os.environ.get("PYTEST_XDIST_WORKER") else ["-n", "2"]
    return run_suite_once("wrong_results", tmp_path_factory.getbasetemp(), ROOT, ["katas"],
                          "--katas-check=wrong", *spread)


@pytest.mark.parametrize("kata", KATAS, ids=IDS)
def test_every_kata_ships_enough_wrong_solutions(kata: Kata) -> None:
    found = load_wrong_solutions(kata)
    assert len(found) >= MIN_WRONG, (
        f"{kata.id}: {len(found)} wrong solutions in wrong.toml; the kata contract asks for at "
        f"least {MIN_WRONG} plausible learner mistakes (CONTRIBUTING.md)")


@pytest.mark.skipif(not AUTHOR_CHECKS, reason=AUTHOR_CHECKS_SKIP_REASON)
@pytest.mark.xdist_group("wrong_suite")
@pytest.mark.parametrize("kata", KATAS, ids=IDS)
def test_every_wrong_solution_is_caught_by_its_named_test(
        kata: Kata, wrong_results: dict[str, dict]) -> None:
    verdicts = judge_wrong(kata, wrong_results.get(kata.id))
    blocked = [v for v in verdicts if v.verdict == "blocked"]
    if blocked and len(blocked) == len(verdicts) and kata.missing_requirements():
        pytest.skip(f"{kata.id} needs {', '.join(kata.missing_requirements())}: "
                    f"its wrong solutions are checked where it runs ({blocked[0].detail})")
    # A named test that needs a package this environment lacks (vLLM, torch) skips here: that
    # wrong solution is proven where the package is (CI runs `katas dev check` there too).
    elsewhere = [v for v in blocked if v.detail.startswith("needs ") and "install" in v.detail]
    bad = [f"{v.wrong.name} ({v.wrong.test}): {v.verdict}: {v.detail}"
           for v in verdicts if v.verdict != "caught" and v not in elsewhere]
    assert not bad, f"{kata.id}: wrong solutions the tests do not catch: " + "; ".join(bad)
