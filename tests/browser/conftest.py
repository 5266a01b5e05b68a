"""Fixtures for the real-browser tests: a JupyterLab server and a headless chromium.

The server runs from this project's environment on a free localhost port with a
token. It serves a temporary copy of notebooks/ (and of tests/browser/fixtures/),
so running the lessons never touches the committed notebooks. The browser is
Debian's chromium (/usr/bin/chromium, installed by setup.sh) driven by Playwright.
Both are stopped at the end of the session, also when a test fails; any process
they leave behind (kernels included) is killed and reported.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("QLAB_CHROMIUM", "/usr/bin/chromium")
OUTPUT = Path(os.environ.get("QLAB_BROWSER_OUTPUT", REPO / "test-output" / "browser"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # the network is closed: no update/safe-browsing pings
    "--disable-component-update",
    "--disable-sync",
    "--disable-breakpad",
    "--disable-dev-shm-usage",
]
# JupyterLab user settings for a quiet, deterministic lab: every cell stays in the
# DOM (no virtual scrolling), and no news or update toasts cover the notebook.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


# ---------------------------------------------------------------- processes


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, read from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> set[int]:
    """All processes below pid (kernels start in their own session, so a process
    group kill would miss them)."""
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_all(pids: set[int], grace: float = 10.0) -> set[int]:
    """SIGTERM pids, wait up to `grace` seconds, SIGKILL the rest; return the ones
    that had to be killed."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    stubborn = {p for p in pids if _alive(p)}
    for pid in stubborn:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return stubborn


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies, even by
    SIGKILL, so a killed test run leaves no server behind (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def processes_mentioning(path: Path) -> set[int]:
    """Live processes whose command line names something under `path`: this
    session's server, kernels (connection files), chromium (profile) and its crash
    handler (database), which re-parents itself to init."""
    needle, me = f"{path}/", os.getpid()
    return {
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and int(p.name) != me and needle in _cmdline(int(p.name))
        and _alive(int(p.name))
    }


@pytest.fixture(scope="session", autouse=True)
def _no_process_left_behind(request, tmp_path_factory):
    """Last teardown of the session: kill anything still running from this
    session's temporary folder, and say so."""
    if not _selected(request.config):
        yield
        return
    base = tmp_path_factory.getbasetemp()
    yield
    left = processes_mentioning(base)
    if left:
        names = {p: _cmdline(p)[:100] for p in left}
        kill_all(left, grace=5)
        print("\nkilled processes left behind:\n  " + "\n  ".join(f"{p} {c}" for p, c in names.items()))


def _selected(config) -> bool:
    """Browser tests run when asked for: `pytest tests/browser` (make test-browser),
    a path inside it, or QLAB_BROWSER_TESTS=1; a plain `pytest tests` skips them."""
    if os.environ.get("QLAB_BROWSER_TESTS") == "1":
        return True
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config, items):
    if _selected(config):
        return
    skip = pytest.mark.skip(reason="browser test: run `make test-browser` or `pytest tests/browser`")
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(skip)


SCREENSHOTS: list[Path] = []


def pytest_terminal_summary(terminalreporter):
    if SCREENSHOTS:
        terminalreporter.write_sep("-", "browser screenshots (panel before / after the move)")
        for path in dict.fromkeys(SCREENSHOTS):
            terminalreporter.write_line(str(path))


def pytest_configure(config):
    # A plain `kill` (or CI's timeout) of pytest then still runs the fixture
    # teardowns below, which stop JupyterLab, the kernels and chromium.
    if _selected(config) and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- JupyterLab


@dataclass
class Lab:
    base_url: str
    token: str
    root: Path
    proc: subprocess.Popen
    log: Path

    def url(self, notebook: str) -> str:
        # reset: start from an empty workspace, not the tabs an earlier test left open
        return f"{self.base_url}/lab/tree/{notebook}?reset&token={self.token}"

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(
            f"{self.base_url}/api/{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def _write_settings(settings_dir: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        pkg, name = plugin.rsplit("/", 1)
        path = settings_dir / pkg / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> Lab:
    """A JupyterLab server from .venv on a free port, serving a scratch copy of the
    notebooks; stopped (with its kernels) at the end of the session."""
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    root.mkdir()
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    shutil.copytree(HERE / "fixtures", root / "fixtures")
    if (REPO / "data").exists():  # lessons read checkpoints from ../data
        (root / "data").symlink_to(REPO / "data")
    home = tmp / "home"
    _write_settings(home / "lab-settings")
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "lab-workspaces"),
        IPYTHONDIR=str(home / "ipython"),
        MPLCONFIGDIR=str(home / "matplotlib"),
        PYTHONHASHSEED="0",
    )
    port, token = free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--allow-root",  # CI containers run as root
        "--ServerApp.terminals_enabled=False",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly",
    ]  # fmt: skip
    log = tmp / "jupyterlab.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    server = Lab(f"http://127.0.0.1:{port}", token, root, proc, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                server.api("status")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer in 90 s:\n{server.log_tail()}")
                time.sleep(0.25)
        print(f"\nJupyterLab {server.base_url} serving {root}")
        yield server
    finally:
        _stop_lab(server)


def _stop_lab(server: Lab) -> None:
    procs = descendants(server.proc.pid)
    _shutdown_kernels(server)  # let the server stop its kernels cleanly first
    procs |= descendants(server.proc.pid)
    try:
        os.killpg(server.proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=5)
    stubborn = kill_all({p for p in procs if _alive(p)}, grace=5)
    if stubborn:
        print(f"killed processes JupyterLab left behind: {sorted(stubborn)}")


# ---------------------------------------------------------------- chromium


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Debian's headless chromium, driven by Playwright, with a fresh profile."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run `bash tests/browser/setup.sh` (make test-browser)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="run tests/browser/setup.sh")
    profile = tmp_path_factory.mktemp("chromium-profile")
    home = tmp_path_factory.mktemp("chromium-home")
    pw = sync_api.sync_playwright().start()
    context = None
    try:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            chromium_sandbox=False,
            # chromium's config and crash database go to this session's folder, not ~
            env=dict(
                os.environ,
                XDG_CONFIG_HOME=str(home / "config"),
                XDG_CACHE_HOME=str(home / "cache"),
            ),
            viewport={"width": 1400, "height": 1000},
            device_scale_factor=1,
        )
        yield context
    finally:
        try:
            if context is not None:
                context.close()
        finally:
            pw.stop()
            left = processes_mentioning(profile) | processes_mentioning(home)
            stubborn = kill_all(left, grace=5)
            if left:
                print(f"stopped chromium processes left behind: {sorted(left)} ({stubborn} by SIGKILL)")


@pytest.fixture
def page(browser, lab):
    """A fresh tab; console errors and uncaught page errors are printed afterwards."""
    tab = browser.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    tab.on(
        "console",
        lambda msg: problems.append(f"console.{msg.type}: {msg.text}")
        if msg.type == "error"
        else None,
    )
    tab.set_default_timeout(30_000)
    tab.problems = problems
    yield tab
    if problems:
        print("browser console:\n  " + "\n  ".join(problems[:20]))
    tab.close()
    _shutdown_kernels(lab)  # each test starts from fresh kernels; frees the CPU meanwhile


def _shutdown_kernels(server: Lab) -> None:
    try:
        for kernel in server.api("kernels"):
            server.api(f"kernels/{kernel['id']}", method="DELETE")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        pass


@pytest.fixture
def output_dir(request) -> Path:
    """test-output/browser/<test name>/: screenshots a person can look at."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in request.node.name)
    path = OUTPUT / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def check_panel(page, lab, output_dir):
    """check_panel(notebook, slider_label, Expect(...)): see panelcheck.check_panel.
    The notebook path is relative to the served root (notebooks/..., fixtures/...)."""
    from panelcheck import Expect
    from panelcheck import check_panel as _check

    def check(notebook: str, slider_label: str, expect: Expect | None = None):
        if not (lab.root / notebook).exists():
            pytest.fail(f"{notebook} not found (give notebooks/<file> or fixtures/<file>)")
        try:
            result = _check(page, lab, notebook, slider_label, expect or Expect(), output_dir)
        finally:
            order = {"before": 0, "after": 1}
            shots = output_dir.glob("*.png")
            SCREENSHOTS.extend(sorted(shots, key=lambda p: order.get(p.stem.rsplit("-", 1)[1], 2)))
        return result

    return check
