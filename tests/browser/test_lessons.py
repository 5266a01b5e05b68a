"""Real-browser checks of the lessons' interactive panels (see panelcheck.py).

To check a new panel, add one line to PANELS: the notebook, the label of the
slider to move, and what that must do to the readout. For a Dropdown or
ToggleButtons, give its label and the option to pick: Expect(option="..."),
optionally with Expect(setup=((label, option), ...)) picked first.
"""

import pytest
from panelcheck import Expect

# SQNR of a uniform quantizer rises about 6 dB per bit.
SQNR_PER_BIT = Expect(trend=+1, plausible=(0.0, 60.0), per_step=(3.0, 9.0))

# Lesson 01 at its default 4-bit symmetric per-tensor grid: the FFN weight's outlier channel sets the
# one scale for all 384 channels (query weight 10.14 dB -> FFN weight 0.24 dB); per-channel scales
# rescue it (0.24 dB -> 14.55 dB).
LESSON_01 = "notebooks/01_quantization_math.ipynb"
OUTLIER_WEIGHT_FALLS = Expect(option="FFN outlier weight", trend=-1, plausible=(-1.0, 60.0))
PER_CHANNEL_RESCUES = Expect(option="per-channel", trend=+1, plausible=(-1.0, 60.0), per_step=(5.0, 30.0),
                             setup=(("tensor", "FFN outlier weight"),))

# Farther outliers stretch min-max's range: its SQNR on the original values falls.
# (More outliers of the same size leave min-max's range, and so its SQNR, where it was.)
MINMAX_FALLS = Expect(readout=r"MinMax\D{0,20}?(-?\d+(?:\.\d+)?)\s*dB", trend=-1, plausible=(0.0, 60.0))

# Lesson 02's outlier panel: fewer bits, a coarser grid (min-max's SQNR falls about 6 dB a bit:
# 22.1 dB at 8 bits, 9.9 at 6); another percentile, another clipping point (99.99 -> 99.9, two stops:
# 40.2 -> 31.6 dB); three whole outlier channels are more than percentile clips (40.2 -> 23.8 dB).
LESSON_02 = "notebooks/02_observers_and_calibration.ipynb"
MINMAX_PER_BIT = Expect(readout=MINMAX_FALLS.readout, trend=+1, plausible=(0.0, 60.0), per_step=(3.0, 9.0))
PERCENTILE_DB = r"Percentile\D{0,20}?(-?\d+(?:\.\d+)?)\s*dB"
PERCENTILE_CHANGES = Expect(readout=PERCENTILE_DB, trend=0, plausible=(0.0, 60.0))

# A timing readout: it must change and stay plausible (timings are noisy, so no trend is asserted).
# Lesson 03 loads MiniLM and times many models: about a minute under nbconvert, more in a browser.
SPEEDUP_CHANGES = Expect(readout=r"torch\.ao int8 (\d+(?:\.\d+)?)x fp32", trend=0, plausible=(0.01, 100.0),
                         timeout=60.0, run_timeout=480.0)

# SmoothQuant's α: the quality moves with it (each new α is measured once, a few seconds).
COSINE_CHANGES = Expect(readout=r"mean cosine (\d\.\d+)", trend=0, plausible=(0.0, 1.0), timeout=60.0,
                        run_timeout=480.0)

# Lesson 04: a new image gives the stepper's accumulator a new range; calibrating on brighter
# images lowers the int8 accuracy (measured: ResNet 100 % at 0.0, 99 % at 0.5, 23 % at 1.0).
ACCUMULATOR_CHANGES = Expect(readout=r"accumulator in \[-?\d+, (-?\d+)\]", trend=0, plausible=(1, 2**31),
                             timeout=30.0, run_timeout=300.0)
BRIGHTER_BREAKS = Expect(readout=r"int8 accuracy ResNet (\d+(?:\.\d+)?) %", trend=-1, plausible=(0.0, 100.0),
                         timeout=60.0, run_timeout=300.0)
CNN_SPEEDUP_CHANGES = Expect(readout=r"torch\.ao int8 (\d+(?:\.\d+)?)x fp32", trend=0,
                             plausible=(0.01, 100.0), timeout=60.0, run_timeout=300.0)

LESSON_04 = "notebooks/04_static_quantization.ipynb"

# Lesson 05: more bits, a finer staircase (the step falls); another weight width, another QAT result.
STEP_FALLS = Expect(readout=r"step (\d+(?:\.\d+)?)", trend=-1, plausible=(0.001, 2.0), run_timeout=300.0)
QAT_CHANGES = Expect(readout=r"QAT (\d+(?:\.\d+)?) %", trend=0, plausible=(0.0, 100.0), timeout=60.0,
                     run_timeout=300.0)
LESSON_05 = "notebooks/05_quantization_aware_training.ipynb"

# Lesson 06: a larger tolerance lets the workflow deploy int8 for more of the four models.
MORE_INT8 = Expect(readout=r"int8 deployed for (\d) of 4", trend=+1, plausible=(0, 4), run_timeout=300.0)

# Lesson 07: running PT2E's int8 graph eagerly (quantize / dequantize as separate float ops) is many
# times slower than compiled; another model, another latency. The lesson compiles six CNN paths and two
# MiniLM paths (about 3 minutes under nbconvert, more in a browser).
EAGER_IS_SLOWER = Expect(readout=r"latency (\d+(?:\.\d+)?) ms", trend=+1, plausible=(0.01, 10_000.0),
                         option="eager", timeout=90.0, run_timeout=600.0)
OTHER_MODEL_CHANGES = Expect(readout=r"latency (\d+(?:\.\d+)?) ms", trend=0, plausible=(0.01, 10_000.0),
                             option="MiniLM · 64 sentences", timeout=90.0, run_timeout=600.0)
LESSON_07 = "notebooks/07_torchao_and_pt2e.ipynb"

PANELS = [
    pytest.param("notebooks/01_quantization_math.ipynb", "bits", SQNR_PER_BIT, id="01-bits"),
    pytest.param(LESSON_01, "tensor", OUTLIER_WEIGHT_FALLS, id="01-tensor"),
    pytest.param(LESSON_01, "granularity", PER_CHANNEL_RESCUES, id="01-granularity"),
    pytest.param("notebooks/02_observers_and_calibration.ipynb", "size (× max|x|)", MINMAX_FALLS,
                 id="02-outlier-size"),
    pytest.param(LESSON_02, "bits", MINMAX_PER_BIT, id="02-outlier-bits"),
    pytest.param(LESSON_02, "percentile", PERCENTILE_CHANGES, id="02-outlier-percentile"),
    pytest.param(LESSON_02, "pattern", Expect(option="channel", readout=PERCENTILE_DB, trend=-1,
                                              plausible=(0.0, 60.0)), id="02-outlier-pattern"),
    pytest.param("notebooks/03_dynamic_quantization.ipynb", "hidden size", SPEEDUP_CHANGES,
                 id="03-hidden-size"),
    pytest.param("notebooks/03_dynamic_quantization.ipynb", "α", COSINE_CHANGES, id="03-smoothquant-alpha"),
    pytest.param(LESSON_04, "image", ACCUMULATOR_CHANGES, id="04-stepper-image"),
    pytest.param(LESSON_04, "shift amount", BRIGHTER_BREAKS, id="04-shift-amount"),
    pytest.param(LESSON_04, "batch size", CNN_SPEEDUP_CHANGES, id="04-batch-size"),
    pytest.param(LESSON_05, "bits", STEP_FALLS, id="05-ste-bits"),
    pytest.param(LESSON_05, "weight bits", QAT_CHANGES, id="05-qat-weight-bits"),
    pytest.param("notebooks/06_choosing_a_method.ipynb", "tolerance (% of fp32)", MORE_INT8,
                 id="06-tolerance"),
    pytest.param(LESSON_07, "run", EAGER_IS_SLOWER, id="07-eager-vs-compiled"),
    pytest.param(LESSON_07, "model", OTHER_MODEL_CHANGES, id="07-model"),
]


@pytest.mark.parametrize("notebook, slider, expect", PANELS)
def test_panel(check_panel, notebook, slider, expect):
    check_panel(notebook, slider, expect)


# ---- self-tests of the harness on tiny panels with lesson 01's contract


def test_harness_passes_a_working_panel(check_panel):
    check_panel("fixtures/panel_ok.ipynb", "bits", SQNR_PER_BIT)


def test_harness_catches_a_dead_slider(check_panel):
    with pytest.raises(AssertionError, match="did not change"):
        check_panel("fixtures/panel_broken.ipynb", "bits", Expect(timeout=5.0))


def test_harness_picks_options(check_panel):
    # ToggleButtons picked in setup, then a Dropdown option: outliers stretch min-max's
    # range, so the SQNR falls (8-bit symmetric: 43.9 dB -> 30.6 dB).
    check_panel("fixtures/panel_ok.ipynb", "data",
                Expect(option="with outliers", trend=-1, plausible=(0.0, 60.0),
                       setup=(("range", "symmetric"),)))


def test_harness_catches_a_dead_dropdown(check_panel):
    with pytest.raises(AssertionError, match="did not change"):
        check_panel("fixtures/panel_broken.ipynb", "data", Expect(option="with outliers", timeout=5.0))
