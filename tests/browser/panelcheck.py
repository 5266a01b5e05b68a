"""Drive a lesson's interactive panel in JupyterLab the way a student does.

    check_panel(page, lab, "notebooks/01_quantization_math.ipynb", "bits",
                Expect(trend=+1, plausible=(0, 60)), output_dir)

opens the notebook, runs all cells, checks that no cell shows an error and that the
widgets rendered, moves the slider labelled "bits" with the arrow keys, and asserts
that the panel redrew: the plot image changed and the readout (by default
"SQNR <number> dB") shows a different, plausible number. It saves a screenshot of
the panel before and after the move into output_dir.

The control can also be a Dropdown or ToggleButtons (found by its description, like a
slider): Expect(option="per-channel") picks that option instead of pressing arrow keys,
and Expect(setup=(("tensor", "FFN weight"),)) picks options in other controls first,
before the "before" state is read:

    check_panel(page, lab, notebook, "granularity",
                Expect(option="per-channel", setup=(("tensor", "FFN weight"),)), output_dir)
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

SQNR_DB = r"SQNR\D{0,20}?(-?\d+(?:\.\d+)?)\s*dB"

# What a broken cell or a broken front end looks like in the page.
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*\w*(Error|Exception)\b.*:", re.M)
WIDGET_REPR = re.compile(r"\b(VBox|HBox|Box|IntSlider|FloatSlider|interactive|Output)\(")
WIDGETS_EXTENSION = "@jupyter-widgets/jupyterlab-manager"
# The notebook in the front tab (others may be open in hidden tabs).
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"
WIDGET_FAILURE = ("Error displaying widget", "Error rendering output", "Loading widget...")


@dataclass(frozen=True)
class Expect:
    """What moving the slider must do to the panel.

    readout:   regex that finds the readout; its first group is the number shown.
    trend:     +1 the number rises when the slider moves right, -1 it falls, 0 it
               only has to change.
    plausible: the number must lie in [lo, hi] before and after the move.
    per_step:  optional [lo, hi] bound on |change| per slider step (e.g. ~6 dB/bit).
    steps:     how many arrow-key presses to move; the helper moves away from the
               end of the range the slider sits at.
    image_changes: the plot <img> in the panel must be redrawn with new pixels.
    timeout:   seconds to wait for the redraw.
    run_timeout: seconds the whole notebook may take to run (Run All Cells) in the browser.
    option:    the control is a Dropdown or ToggleButtons: pick the option with this label
               (its text as shown) instead of moving a slider. trend then says how the
               number moves when this option is picked (+1 rises, -1 falls, 0 changes);
               per_step bounds the whole change. The option must not be picked already.
    setup:     (control label, option label) pairs picked in this order before the
               "before" state is read, each waited on until the panel redrew (the
               readout may stay the same), e.g. (("tensor", "FFN weight"),).
    """

    readout: str = SQNR_DB
    trend: int = +1
    plausible: tuple[float, float] = (-20.0, 120.0)
    per_step: tuple[float, float] | None = None
    steps: int = 2
    image_changes: bool = True
    timeout: float = 30.0
    run_timeout: float = 150.0
    option: str | None = None
    setup: tuple[tuple[str, str], ...] = ()


@dataclass
class PanelState:
    value: float | str  # the slider's position, or the option picked
    readout: float | None
    images: tuple[str, ...]
    text: str


@dataclass
class PanelResult:
    before: PanelState
    after: PanelState
    screenshots: tuple[Path, Path]


# ---------------------------------------------------------------- notebook


def kernel_status(page) -> str:
    item = page.locator('#jp-main-statusbar .jp-StatusBar-TextItem[title^="Change kernel"]')
    return item.first.inner_text() if item.count() else ""


def wait_kernel_idle(page, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not kernel_status(page).endswith("| Idle"):
        if time.monotonic() > deadline:
            raise AssertionError(f"kernel not idle after {timeout:.0f} s: {kernel_status(page)!r}")
        time.sleep(0.2)


def assert_widgets_extension(page) -> None:
    """The ipywidgets front end (@jupyter-widgets/jupyterlab-manager) is installed
    and enabled in this lab; without it a panel shows at best a static picture."""
    data = json.loads(page.locator("#jupyter-config-data").text_content())
    names = [ext.get("name") for ext in data.get("federated_extensions", [])]
    assert WIDGETS_EXTENSION in names, f"{WIDGETS_EXTENSION} not installed; lab extensions: {names}"
    disabled = data.get("disabledExtensions") or []
    assert not [d for d in disabled if d.startswith(WIDGETS_EXTENSION)], (
        f"{WIDGETS_EXTENSION} is disabled: {disabled}"
    )


def open_notebook(page, lab, notebook: str) -> None:
    """Open `notebook` (a path under the lab's root) and wait for its kernel."""
    page.goto(lab.url(notebook))
    assert_widgets_extension(page)
    page.locator(f"{NOTEBOOK} .jp-Cell").first.wait_for(timeout=60_000)
    wait_kernel_idle(page)


def run_all_cells(page, timeout: float = 150.0) -> None:
    """Run > Run All Cells, then wait until no cell is queued or running."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    label = page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))
    page.locator(".lm-Menu-item", has=label).click()
    prompts = page.locator(f"{NOTEBOOK} .jp-CodeCell .jp-InputArea-prompt")
    deadline = time.monotonic() + timeout
    while any("*" in p for p in prompts.all_inner_texts()):
        if time.monotonic() > deadline:
            raise AssertionError(f"cells still running after {timeout:.0f} s")
        time.sleep(0.25)
    wait_kernel_idle(page)


def assert_no_errors(page, where: str = "") -> None:
    """No cell shows a traceback, and every widget rendered (the ipywidgets
    extension loaded: no 'Loading widget...', no raw `VBox(...)` text)."""
    problems = []
    for out in page.locator(f"{NOTEBOOK} .jp-OutputArea-output").all():
        text = out.inner_text()
        mime = out.get_attribute("data-mime-type") or ""
        if "stderr" in mime and TRACEBACK.search(text):
            problems.append(f"error output:\n{text[-1500:]}")
        elif mime == "text/plain" and WIDGET_REPR.search(text):
            problems.append(f"widget shown as text (front-end extension not loaded?): {text[:200]}")
        for failure in WIDGET_FAILURE:
            if failure in text:
                problems.append(f"{failure!r}: {text[:300]}")
    assert not problems, f"{where}: " + "\n\n".join(problems)


def run_notebook(page, lab, notebook: str, timeout: float = 150.0) -> None:
    """Open, run all cells (within `timeout` seconds), and check that nothing shows an error."""
    open_notebook(page, lab, notebook)
    run_all_cells(page, timeout)
    # Widgets render asynchronously once the kernel replied; give them a moment.
    page.wait_for_function(
        "() => !document.body.innerText.includes('Loading widget...')", timeout=30_000
    )
    assert_no_errors(page, notebook)


# ---------------------------------------------------------------- panel


# The ipywidgets 8 controls a panel can have, by their CSS class; each shows its
# description in a label.widget-label.
CONTROLS = ".widget-slider, .widget-dropdown, .widget-toggle-buttons"


def find_panel(page, label: str):
    """The code cell holding the control (slider, Dropdown or ToggleButtons) labelled
    `label`, and that control."""
    name = page.locator("label.widget-label", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    control = page.locator(CONTROLS).filter(has=name)
    cells = page.locator(f"{NOTEBOOK} .jp-CodeCell").filter(has=control)
    count = cells.count()
    assert count == 1, (
        f"expected one cell with a control labelled {label!r}, found {count}"
        + (" (no widget rendered at all)" if not page.locator(".jupyter-widgets").count() else "")
    )
    controls = cells.locator(CONTROLS).filter(has=name)
    assert controls.count() == 1, f"{controls.count()} controls labelled {label!r} in one cell"
    return cells.first, controls.first


def _kind(control) -> str:
    classes = control.get_attribute("class") or ""
    for kind in ("slider", "dropdown", "toggle-buttons"):
        if f"widget-{kind}" in classes.split():
            return kind
    raise AssertionError(f"not a slider, dropdown or toggle buttons: class={classes!r}")


def _buttons(control):
    return control.locator("button.widget-toggle-button")


def _text(label: str) -> str:
    """A label as written in the notebook (ipywidgets shows a Dropdown's spaces as NBSP)."""
    return label.replace("\xa0", " ").strip()


def options_of(control) -> list[str]:
    """The option labels of a Dropdown or ToggleButtons, as shown."""
    if _kind(control) == "dropdown":
        return [_text(t) for t in control.locator("select option").all_inner_texts()]
    return [_text(t) for t in _buttons(control).all_inner_texts()]


def control_value(control) -> float | str:
    """A slider's position, or the label of the option picked in a Dropdown / ToggleButtons."""
    kind = _kind(control)
    if kind == "slider":
        return float(control.locator(".noUi-handle").get_attribute("aria-valuenow"))
    if kind == "dropdown":
        picked = "s => s.selectedIndex < 0 ? '' : s.options[s.selectedIndex].text"
        return _text(control.locator("select").evaluate(picked))
    active = control.locator("button.widget-toggle-button.mod-active")
    return _text(active.first.inner_text()) if active.count() else ""


def pick_option(control, option: str) -> None:
    """Pick `option` (its label as shown) in a Dropdown or ToggleButtons, as a student would."""
    kind = _kind(control)
    assert kind != "slider", "pick_option needs a Dropdown or ToggleButtons, got a slider"
    shown = options_of(control)
    assert option in shown, f"no option {option!r}; the control offers {shown}"
    if kind == "dropdown":
        control.locator("select").select_option(index=shown.index(option))
    else:
        _buttons(control).nth(shown.index(option)).click()


def read_panel(cell, control, readout: str) -> PanelState:
    text = cell.locator(".jp-Cell-outputArea").inner_text()
    m = re.search(readout, text)
    srcs = cell.locator(".jp-Cell-outputArea img").evaluate_all("els => els.map(e => e.src)")
    return PanelState(
        value=control_value(control),
        readout=float(m.group(1)) if m else None,
        images=tuple(srcs),
        text=text,
    )


def move_slider(page, slider, steps: int) -> int:
    """Press the arrow keys on the slider's handle, away from the end it sits at.
    Returns the direction moved (+1 right, -1 left)."""
    handle = slider.locator(".noUi-handle")
    now = float(handle.get_attribute("aria-valuenow"))
    lo, hi = (float(handle.get_attribute(a)) for a in ("aria-valuemin", "aria-valuemax"))
    direction = -1 if hi - now < now - lo else +1
    handle.focus()
    for _ in range(steps):
        page.keyboard.press("ArrowRight" if direction > 0 else "ArrowLeft")
        time.sleep(0.05)
    return direction


def _wait_for_redraw(cell, control, before: PanelState, expect: Expect, need_readout=True) -> PanelState:
    """Poll until the image (and, with need_readout, the readout) differs from `before`
    and stayed the same for two polls (the redraw finished), or the timeout passes;
    return the last state."""
    deadline = time.monotonic() + expect.timeout
    last = None
    while True:
        state = read_panel(cell, control, expect.readout)
        readout_changed = state.readout != before.readout or not need_readout
        changed = readout_changed and (state.images != before.images or not expect.image_changes)
        settled = last is not None and (state.readout, state.images) == (
            last.readout,
            last.images,
        )
        if changed and state.images and settled:
            return state
        if time.monotonic() > deadline or "Traceback (most recent call last)" in state.text:
            return state  # the caller's assertions say what went wrong
        last = state
        time.sleep(0.4)


def _set_up(page, expect: Expect) -> None:
    """Pick expect.setup's options, one at a time, each waited on until the panel redrew."""
    for label, option in expect.setup:
        cell, control = find_panel(page, label)
        if control_value(control) == option:
            continue
        before = read_panel(cell, control, expect.readout)
        pick_option(control, option)
        state = _wait_for_redraw(cell, control, before, expect, need_readout=False)
        assert state.value == option, f"setup: {label!r} shows {state.value!r}, not {option!r}"
        wait_kernel_idle(page)


def check_panel(
    page, lab, notebook: str, slider_label: str, expect: Expect, output_dir: Path
) -> PanelResult:
    """Run `notebook`, move the slider labelled `slider_label` (or, with expect.option,
    pick that option in the Dropdown / ToggleButtons so labelled), assert `expect`."""
    label = slider_label
    what = f"{label}={expect.option}" if expect.option is not None else label
    stem = f"{Path(notebook).stem}-{re.sub(r'[^A-Za-z0-9]+', '_', what)}"
    try:
        run_notebook(page, lab, notebook, expect.run_timeout)
        _set_up(page, expect)
        cell, control = find_panel(page, label)
        kind = _kind(control)
        if expect.option is None:
            assert kind == "slider", (
                f"{label!r} is a {kind}: say which option to pick with Expect(option=...)"
            )
        else:
            assert kind != "slider", (
                f"{label!r} is a slider: Expect(option=...) needs a Dropdown or ToggleButtons"
            )
        outputs = cell.locator(".jp-Cell-outputArea")
        outputs.scroll_into_view_if_needed()
        before = read_panel(cell, control, expect.readout)
        assert before.readout is not None, (
            f"no readout matching {expect.readout!r} in the panel:\n{before.text[:500]}"
        )
        assert before.images, "the panel shows no plot image"
        if expect.option is not None:
            assert before.value != expect.option, (
                f"{label!r} already shows {expect.option!r}; pick another option first with Expect(setup=...)"
            )
        shot_before = output_dir / f"{stem}-before.png"
        outputs.screenshot(path=str(shot_before))

        if expect.option is None:
            direction = move_slider(page, control, expect.steps)
        else:
            pick_option(control, expect.option)
        after = _wait_for_redraw(cell, control, before, expect)
        wait_kernel_idle(page)
        shot_after = output_dir / f"{stem}-after.png"
        outputs.screenshot(path=str(shot_after))
        print(f"\n{notebook} [{label}] {before.value} -> {after.value}: "
              f"readout {before.readout} -> {after.readout}\n  {shot_before}\n  {shot_after}")

        assert_no_errors(page, f"{notebook} after changing {label!r}")
        if expect.option is None:
            moved = after.value - before.value
            assert moved * direction > 0, f"slider {label!r} did not move ({before.value})"
        else:
            moved = 1  # one pick: the trend is the sign of the change itself
            assert after.value == expect.option, (
                f"{label!r} shows {after.value!r} after picking {expect.option!r}"
            )
        assert after.readout is not None, f"readout disappeared:\n{after.text[:500]}"
        assert after.readout != before.readout, (
            f"readout did not change when {label!r} went "
            f"{before.value} -> {after.value}: still {before.readout}"
        )
        if expect.image_changes:
            assert after.images, "the plot image disappeared"
            assert after.images != before.images, (
                f"plot image did not change when {label!r} went {before.value} -> {after.value}"
            )
        lo, hi = expect.plausible
        for value in (before.readout, after.readout):
            assert lo <= value <= hi, f"readout {value} outside plausible [{lo}, {hi}]"
        delta = after.readout - before.readout
        if expect.trend:
            assert delta * moved * expect.trend > 0, (
                f"readout went {before.readout} -> {after.readout} when {label!r} "
                f"went {before.value} -> {after.value}; expected trend {expect.trend:+d}"
            )
        if expect.per_step:
            per = abs(delta) / abs(moved)
            assert expect.per_step[0] <= per <= expect.per_step[1], (
                f"readout changed {per:.2f} per step, expected within {expect.per_step}"
            )
        return PanelResult(before, after, (shot_before, shot_after))
    except BaseException:
        shot = output_dir / f"{stem}-FAILED-page.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nfailure screenshot: {shot}")
        except Exception:
            pass
        raise
