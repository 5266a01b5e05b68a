"""Lesson 06, the self-checks of its exercises."""

from __future__ import annotations

from qlab.lab.kit.check import Student, checker, describe, verdict

from .numbers import decide


def _decision_row(method: str, loss: float, speedup: float, size: int) -> dict:
    return {"model": "case", "method": method, "quality": 0.99 - loss, "metric": "accuracy", "loss": loss,
            "size_bytes": size, "speedup": speedup, "baseline": "fp32 channels_last", "data": "",
            "seconds": 0.0, "note": ""}


def _decision_cases() -> list[tuple[str, list[dict], float]]:
    r = _decision_row
    fp32 = r("fp32", 0.0, 1.0, 1_000_000)
    return [
        ("PTQ is enough: static is within the tolerance", [fp32, r("dynamic", 0.0, 1.0, 1_000_000),
                                                           r("static", 0.003, 1.9, 300_000),
                                                           r("QAT 8-bit", 0.0, 1.9, 300_000)], 0.005),
        ("two PTQ models within the tolerance: the faster one", [fp32, r("dynamic", 0.001, 3.5, 600_000),
                                                                 r("static", 0.0, 1.5, 300_000)], 0.01),
        ("no PTQ model is within the tolerance: QAT", [fp32, r("dynamic", 0.04, 1.0, 1_000_000),
                                                       r("static", 0.03, 1.9, 300_000),
                                                       r("QAT 8-bit", 0.002, 1.9, 300_000)], 0.01),
        ("within the tolerance but no faster and no smaller", [fp32, r("dynamic", 0.0, 1.0, 990_000),
                                                               r("static", 0.02, 1.8, 300_000),
                                                               r("QAT 8-bit", 0.001, 1.8, 300_000)], 0.01),
        ("nothing is within the tolerance", [fp32, r("static", 0.05, 2.0, 300_000),
                                             r("QAT 8-bit", 0.03, 2.0, 300_000)], 0.01),
        ("a BERT: dynamic + SmoothQuant is a PTQ method too",
         [fp32, r("dynamic", 0.05, 3.5, 650_000), r("dynamic + SmoothQuant", 0.003, 2.3, 700_000)], 0.01),
    ]


def _decision_hint(rows: list[dict], tolerance: float, got, expected) -> str:
    """The most likely mistake, from what the student's answer is."""
    by = {x["method"]: x for x in rows}
    if expected is None and got == "fp32":
        return "when nothing is acceptable, return None (the model stays fp32; nothing is deployed)"
    if got is None and expected is not None:
        return ("a model is acceptable here: the PTQ methods are 'dynamic', 'dynamic + SmoothQuant' and "
                "'static'; QAT's are 'QAT 8-bit' and 'QAT 4-bit'")
    if got not in by:
        return f"return one of the rows' methods ({', '.join(by)}), or None"
    row, fp32 = by[got], by["fp32"]
    if got.startswith("QAT") and expected is not None and not expected.startswith("QAT"):
        return "PTQ first: QAT costs training, so it is tried only when no PTQ model is acceptable"
    if row["loss"] > tolerance:
        return "the tolerance comes first: a model whose loss is above it is not acceptable, however fast"
    if not (row["speedup"] > 1.1 or row["size_bytes"] < fp32["size_bytes"] / 1.1):
        return ("a model must also gain something to be deployed: more than 1.1x faster than fp32 "
                "(speedup > 1.1) or 1.1x smaller (size_bytes < fp32's / 1.1)")
    return ("the smallest loss is not the goal: any model within the tolerance is good enough, and "
            "among those the workflow deploys the fastest")


_DECISION_RETURNS = "the method to deploy, a row's \"method\" (a str such as 'static'), or None"


@checker(_DECISION_RETURNS)
def check_decision(student: Student) -> bool:
    """Check a student's fn(rows, tolerance) -> the method to deploy (a row's "method"), or None,
    against numbers.decide on cases built to catch each typical mistake."""
    name = student.name
    cases = _decision_cases()
    for what, rows, tolerance in cases:
        chosen = decide(rows, tolerance)["chosen"]
        expected = chosen["method"] if chosen else None
        got = student(what, [dict(x) for x in rows], tolerance)
        if got is not None and not isinstance(got, str):
            row = " (for a row r, that is r[\"method\"])" if isinstance(got, dict) else ""
            return verdict(False, name, f"{what}: it returned {describe(got)}; it should return "
                                        f"{_DECISION_RETURNS}{row}")
        if got != expected:
            table = "; ".join(f"{x['method']} loss {x['loss']:g} {x['speedup']:g}x "
                              f"{x['size_bytes'] / 1e6:g} MB" for x in rows)
            hint = _decision_hint(rows, tolerance, got, expected)
            return verdict(False, name, f"{what} (tolerance {tolerance:g}; {table}): expected {expected!r}, "
                                        f"got {got!r}.\n   Hint: {hint}")
    return verdict(True, name, f"all {len(cases)} cases match the lesson's numbers.decide")
