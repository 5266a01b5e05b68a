"""Lesson 06's numbers (qlab.lab.lessons.l06_choosing_a_method): the decision over measured rows, choose()
on a real model and its bad input, and `qlab report` (columns, --json schema, unknown model names)."""

import json

import pytest
import torch
from torch import nn

from qlab.lab.kit import checkpoints, data
from qlab.lab.lessons.l06_choosing_a_method import numbers
from qlab.lab.tools import cli


def _row(method, loss, speedup, size=1_000_000):
    return {"model": "m", "method": method, "quality": 0.99 - loss, "metric": "accuracy", "loss": loss,
            "size_bytes": size, "speedup": speedup, "baseline": "fp32 contiguous", "data": "", "seconds": 0.0,
            "note": ""}


ROWS = [_row("fp32", 0.0, 1.0), _row("dynamic", 0.0, 1.0), _row("static", 0.004, 1.8, 300_000),
        _row("QAT 8-bit", 0.0, 1.8, 300_000), _row("QAT 4-bit", 0.01, 1.8, 300_000)]


@pytest.mark.parametrize(("tolerance", "chosen"), [(0.0, "QAT 8-bit"), (0.005, "static"), (0.1, "static")])
def test_decide_tries_ptq_first_then_qat(tolerance, chosen):
    d = numbers.decide(ROWS, tolerance)
    assert d["chosen"]["method"] == chosen
    assert any("gains neither speed nor size" in line for line in d["trail"])  # dynamic: no gain here
    assert d["trail"][-1].startswith(f"5. deploy {chosen}")


def test_decide_keeps_fp32_when_nothing_is_acceptable():
    d = numbers.decide([_row("fp32", 0.0, 1.0), _row("static", 0.05, 2.0)], 0.01)
    assert d["chosen"] is None and "keep fp32" in d["trail"][-1]


@pytest.mark.parametrize("tolerance", [-0.01, "1%", True, float("nan")])
def test_decide_refuses_bad_tolerance(tolerance):
    with pytest.raises(ValueError, match="tolerance is the largest quality loss"):
        numbers.decide(ROWS, tolerance)


def test_choose_on_the_lesson_resnet(capsys):
    x_train, _ = data.digits_tensors("train")
    x, y = data.digits_tensors("test")
    result = numbers.choose(checkpoints.load_model("resnet"), (x, y), 0.01, calib=x_train[:128],
                             min_run_time=0.05)
    assert [r["method"] for r in result["rows"]] == ["fp32", "dynamic", "static"]
    rows = {r["method"]: r for r in result["rows"]}
    small = rows["fp32"]["size_bytes"] / numbers.GAIN
    assert rows["static"]["loss"] <= 0.01 and rows["static"]["size_bytes"] < small  # static is acceptable
    # the fastest acceptable row, by this run's own timings (dynamic, fc only, can tie static on 2 cores)
    accepted = [r for m, r in rows.items() if m != "fp32" and r["loss"] <= 0.01
                and (r["speedup"] > numbers.GAIN or r["size_bytes"] < small)]
    assert result["chosen"] is max(accepted, key=lambda r: r["speedup"])
    assert f"5. deploy {result['chosen']['method']}" in capsys.readouterr().out


def test_choose_bad_input():
    x, y = data.digits_tensors("test")
    model = checkpoints.load_model("resnet")
    with pytest.raises(ValueError, match="tolerance"):
        numbers.choose(model, (x, y), -1)
    with pytest.raises(ValueError, match="needs calibration images"):
        numbers.choose(model, (x, y), 0.01)
    with pytest.raises(ValueError, match="fuse_model"):
        numbers.choose(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), (x, y), 0.01, calib=x[:8])
    with pytest.raises(ValueError, match="at least one example"):
        numbers.choose(model, (x[:0], y[:0]), 0.01, calib=x[:8])
    with pytest.raises(ValueError, match="data must be"):
        numbers.choose(model, None, 0.01, calib=x[:8])
    with pytest.raises(ValueError, match="methods must be"):
        numbers.choose(model, (x, y), 0.01, methods=("qat",))


def test_report_json_schema_and_markdown_columns(capsys):
    torch.set_num_threads(2)
    assert cli.main(["report", "--models", "charlstm", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"environment", "rows"}
    assert [r["method"] for r in out["rows"]] == ["fp32", "dynamic"]
    assert all(set(r) == set(numbers.COLUMNS) for r in out["rows"])
    md = numbers.report_markdown(out["rows"])
    assert md.splitlines()[0] == "| " + " | ".join(numbers.COLUMNS) + " |"
    assert len(md.splitlines()) == 2 + len(out["rows"])


def test_report_refuses_an_unknown_model(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["report", "--models", "resnet,alexnet"])
    assert e.value.code == 2
    assert "unknown model name(s) ['alexnet']; choose from resnet, mobilenet_v2, charlstm, minilm" in \
        capsys.readouterr().err


def test_workflow_panel_deploys_more_int8_as_the_tolerance_grows():
    import re

    from qlab.lab.lessons.l06_choosing_a_method.panels import workflow_panel

    rows = {"a": ROWS, "b": [_row("fp32", 0.0, 1.0), _row("dynamic", 0.02, 3.0, 600_000)]}
    panel = workflow_panel(rows, tolerance=0.0)

    def deployed():
        return int(re.search(r"int8 deployed for (\d) of 2", panel.readout.value).group(1))

    assert deployed() == 1 and "a QAT 8-bit" in panel.readout.value
    panel.tolerance.value = 2.5  # 2.5 % of 0.99 > 0.02: b's dynamic model is now within it
    assert deployed() == 2 and "b dynamic (3.00x)" in panel.readout.value
    panel.model.value = "b"
    assert "5. deploy dynamic" in panel.trail.value
    with pytest.raises(ValueError, match="tolerance=-1 is outside"):
        workflow_panel(rows, tolerance=-1)
    with pytest.raises(ValueError, match="model must be one of"):
        workflow_panel(rows, model="c")
