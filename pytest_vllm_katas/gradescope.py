"""Gradescope's ``results.json``, for teachers who grade katas on Gradescope.

``pytest --katas-report=results.json --katas-report-format=gradescope`` (or ``katas export
--gradescope``) writes one Gradescope test per kata: its score is the share of the kata's
gradable tests that passed (tests blocked for want of a GPU, a package or a model are left out,
so a machine without a GPU does not cost points), out of ``max_score`` 1. A kata whose tests
did not all run on this code (``partial``) is scored on what passed. The output of each entry
is the kata's one-line verdict; the whole file's shape is ``gradescope.schema.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

MAX_SCORE = 1.0


def kata_score(kata: dict) -> float:
    """Passed tests over gradable tests (everything but blocked ones), rounded to 4 places."""
    gradable = kata["total"] - kata["counts"].get("blocked", 0)
    if kata["status"] == "error" or gradable <= 0:
        return 0.0
    return round(MAX_SCORE * kata["passed"] / gradable, 4)


def gradescope_results(impl: str, katas: Iterable[dict], duration: float) -> dict:
    tests = []
    for kata in sorted(katas, key=lambda k: k["id"]):
        counts = kata["counts"]
        output = f"{kata['status']}: {kata['passed']}/{kata['total']} tests passed"
        if counts.get("blocked"):
            output += f" ({counts['blocked']} blocked on this machine, not scored)"
        if kata["reason"]:
            output += f"\n{kata['reason']}"
        tests.append({"name": f"{kata['lab']} {kata['id']}: {kata['title']}",
                      "number": kata["lab"],
                      "score": kata_score(kata),
                      "max_score": MAX_SCORE,
                      "status": "passed" if kata["status"] == "passed" else "failed",
                      "output": output,
                      "visibility": "visible"})
    return {"score": round(sum(t["score"] for t in tests), 4),
            "execution_time": round(duration, 3),
            "output": f"vllm-katas, impl={impl}: {sum(t['status'] == 'passed' for t in tests)}"
                      f"/{len(tests)} katas passed",
            "visibility": "visible",
            "stdout_visibility": "hidden",
            "tests": tests}


def write_gradescope(path: Path, impl: str, katas: Iterable[dict], duration: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(gradescope_results(impl, katas, duration), indent=2) + "\n",
                    encoding="utf-8")
