"""The install steps, checked: `make setup` and the README's commands without make (issue 24).

Always (seconds): the Makefile's torch and torchvision pins keep an installed build that satisfies
them, so a CPU-only torch ("2.14.1+cpu") installed first stays (PEP 440, and pip itself, on this
.venv and on a stand-in "+cpu" install); the README names the same pins, and its Windows block is
its Linux/macOS block in PowerShell's spelling.

Slow, only with QLAB_INSTALL_TEST=1 (`make test-install`, several minutes and several GB of disk):
a clone of this repository's HEAD runs the README's Linux/macOS block with bash, from no .venv,
with pip's defaults; the clone is deleted afterwards.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "torchvision")


def makefile_pins(makefile: Path = ROOT / "Makefile") -> dict[str, str]:
    """{"torch": "2.14.1", "torchvision": "0.29.1"}: the versions `make setup` installs."""
    pins = dict(re.findall(r"\b(torch|torchvision)==([0-9][0-9A-Za-z.+]*)", makefile.read_text()))
    assert set(pins) == set(PACKAGES), f"Makefile's pins not found: {pins}"
    return pins


def readme_block(name: str, readme: Path = ROOT / "README.md") -> list[str]:
    """The command lines between <!-- plain-pip:NAME --> and <!-- /plain-pip:NAME --> in the README."""
    found = re.search(
        rf"<!-- plain-pip:{name} -->\s*```\w*\n(.*?)```\s*<!-- /plain-pip:{name} -->",
        readme.read_text(encoding="utf-8"),
        re.S,
    )
    assert found, f"{readme.name} has no <!-- plain-pip:{name} --> ... <!-- /plain-pip:{name} --> block"
    return [line for line in found.group(1).splitlines() if line.strip()]


def without_comment(line: str) -> str:
    return re.sub(r"\s+#.*$", "", line).strip()


def pip_would_install(*requirements: str, python: str | None = None) -> list[str]:
    """What `pip install REQUIREMENTS` would install ("name==version"), from pip's own dry run."""
    target = ["--python", python] if python else []
    run = subprocess.run(
        [sys.executable, "-m", "pip", *target, "install", "--dry-run", "--quiet", "--no-input",
         "--disable-pip-version-check", "--report", "-", *requirements],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    return [f"{item['metadata']['name']}=={item['metadata']['version']}" for item in report["install"]]


# ---- always ------------------------------------------------------------------------------------


def test_the_readme_names_the_makefile_pins():
    pins = makefile_pins()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, version in pins.items():
        named = set(re.findall(rf"\b{name}==([0-9][0-9A-Za-z.+]*[0-9A-Za-z])", text))
        assert named == {version}, f"README.md names {name}=={named}, the Makefile {name}=={version}"
    assert f"torch=={pins['torch']} torchvision=={pins['torchvision']}" in readme_block("linux")[1]


def test_the_windows_block_is_the_linux_block_in_powershell():
    linux = [without_comment(line) for line in readme_block("linux")]
    windows = [
        without_comment(line)
        .replace(".venv\\Scripts\\", ".venv/bin/")
        .replace('".[dev]"', "'.[dev]'")
        .replace("py -3.11 ", "python3 ")
        for line in readme_block("windows")
    ]
    assert windows == linux


@pytest.mark.parametrize("name", PACKAGES)
def test_a_local_build_label_satisfies_the_pin(name):
    # PEP 440: `==V` with no local label matches V+anything, so make setup's
    # `pip install torch==2.14.1` is satisfied by PyTorch's CPU build, 2.14.1+cpu.
    version = makefile_pins()[name]
    pin = SpecifierSet(f"=={version}")
    assert pin.contains(f"{version}+cpu") and pin.contains(f"{version}+cu130") and pin.contains(version)
    *head, last = version.split(".")
    assert not pin.contains(".".join([*head, str(int(last) + 1)]) + "+cpu")


def test_make_setup_keeps_the_installed_torch():
    from importlib.metadata import version

    pins = makefile_pins()
    installed = {name: version(name) for name in PACKAGES}
    for name in PACKAGES:
        if not SpecifierSet(f"=={pins[name]}").contains(installed[name]):
            pytest.skip(f"this environment has {name} {installed[name]}, not the Makefile's {pins[name]}")
    assert pip_would_install(*(f"{name}=={pins[name]}" for name in PACKAGES)) == []


def test_pip_keeps_a_cpu_build_that_satisfies_the_pins(tmp_path):
    # A stand-in for PyTorch's CPU builds: an environment whose installed torch and torchvision
    # carry the "+cpu" label. pip's resolver, asked for the Makefile's pins, installs nothing.
    pins = makefile_pins()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    for name, requires in (("torch", ""), ("torchvision", f"Requires-Dist: torch=={pins['torch']}\n")):
        info = Path(purelib) / f"{name}-{pins[name]}+cpu.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {pins[name]}+cpu\n{requires}"
        )
        (info / "INSTALLER").write_text("pip\n")
        (info / "RECORD").write_text("")
    requirements = [f"{name}=={pins[name]}" for name in PACKAGES]
    assert pip_would_install(*requirements, python=str(python)) == []


# ---- slow: the README's commands in a fresh clone ----------------------------------------------

CORE_TESTS = "tests/test_qtypes.py tests/test_qparams.py tests/test_ops.py"


def runnable(lines: list[str]) -> list[str]:
    """The README's Linux/macOS block as the test runs it: every line as written, except that
    JupyterLab is asked for its version instead of opened, `pytest tests` runs the core tests
    only, and the notebooks are collected by nbval, not executed."""
    changes = {
        "lab": (r"^(\S*jupyter) lab\b.*$", r"\1 lab --version"),
        "tests": (r"^(\S*python -m pytest .*?)(?<= )tests(?= |$)(.*)$", rf"\1{CORE_TESTS}\2"),
        "nbval": (r"^(\S*python -m pytest .*--nbval-lax .*)$", r"\1 --collect-only"),
    }
    out, used = [], []
    for line in lines:
        command = without_comment(line)
        for what, (pattern, replacement) in changes.items():
            command, n = re.subn(pattern, replacement, command)
            used += [what] * n
        out.append(command)
    assert sorted(used) == sorted(changes), f"the README block changed shape: {used}"
    assert any(re.match(r"^\S*qlab doctor$", command) for command in out), "no `qlab doctor` line"
    return out


def test_runnable_keeps_every_install_line_as_written():
    lines = readme_block("linux")
    commands = runnable(lines)
    assert len(commands) == len(lines)
    assert all("pip install" not in line or without_comment(line) in commands for line in lines)


def clean_environment() -> dict[str, str]:
    """This environment without the active .venv, so the clone's commands find the system Python."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    here = str(Path(sys.prefix) / ("Scripts" if os.name == "nt" else "bin"))
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != here)
    return env


@pytest.mark.skipif(
    os.environ.get("QLAB_INSTALL_TEST") != "1",
    reason="installs PyTorch into a fresh clone (minutes, GBs of disk): set QLAB_INSTALL_TEST=1 "
    "or run `make test-install`",
)
def test_the_readme_commands_install_and_run_in_a_fresh_clone(tmp_path):
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    clone = tmp_path / "qlab"
    try:
        subprocess.run(["git", "clone", "-q", top, str(clone)], check=True, timeout=300)
        commands = runnable(readme_block("linux", clone / "README.md"))
        script = "set -euxo pipefail\n" + "\n".join(commands) + "\n"
        start = time.perf_counter()
        run = subprocess.run(
            ["bash", "-c", script], cwd=clone, env=clean_environment(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=3600,
        )
        seconds = time.perf_counter() - start
        assert run.returncode == 0, run.stdout[-8000:]
        assert "all good" in run.stdout, run.stdout[-8000:]
        size = subprocess.run(["du", "-sh", str(clone / ".venv")], capture_output=True, text=True).stdout
        print(f"README commands ran in {seconds:.0f} s; .venv {size.split()[0]}")
        shown = re.compile(r"^\+ |^\d+\.\d+\.\d+$| passed| collected|^torch |all good")
        print("\n".join(line for line in run.stdout.splitlines() if shown.search(line)))
    finally:
        shutil.rmtree(clone, ignore_errors=True)
    assert not clone.exists()
