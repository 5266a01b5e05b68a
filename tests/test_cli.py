import pytest

from qlab.lab.kit import compiler, torch_ao
from qlab.lab.tools import cli


def test_doctor_reports_the_machine(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "int8 engine   x86 (the best one here; PyTorch here has" in out and "all good" in out
    assert "differs:" not in out and "Warning" not in out and "deprecated" not in out


def test_doctor_says_what_lesson_07_skips_without_a_compiler(capsys, monkeypatch):
    monkeypatch.setattr(compiler, "cpp_compiler", lambda: None)
    assert cli.main(["doctor"]) == 0  # the lessons still run: lesson 07 skips its compiled rows
    out = capsys.readouterr().out
    assert "c++ compiler  none that works" in out
    assert "so lesson 07 skips its compiled rows. To run them, install" in out


def test_doctor_on_an_arm_laptop_says_what_the_lessons_do_differently(capsys, monkeypatch):
    monkeypatch.setattr(torch_ao, "ENGINE", "qnnpack")
    monkeypatch.setattr(torch_ao, "PARITY_ENGINE", None)
    monkeypatch.setattr(torch_ao, "X86", False)
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "int8 engine   qnnpack" in out
    assert out.count("  differs:    ") == len(torch_ao.differences()) == 4
    assert "vnni" not in out  # an x86-only fact


@pytest.mark.parametrize("platform, names", [("darwin", "xcode-select --install"),
                                             ("win32", "Visual Studio Build Tools"),
                                             ("linux", "apt install g++")])
def test_the_missing_compiler_line_names_what_to_install_on_each_os(monkeypatch, platform, names):
    monkeypatch.setattr(compiler.sys, "platform", platform)
    assert names in compiler.missing_line()


def test_a_compiler_that_does_not_exist_is_found_missing(monkeypatch):
    monkeypatch.setattr(compiler, "_inductor_choice", lambda: "qlab-no-such-compiler")
    compiler.cpp_compiler.cache_clear()
    try:
        assert compiler.cpp_compiler() is None and not compiler.can_compile()
    finally:
        monkeypatch.undo()
        compiler.cpp_compiler.cache_clear()
    assert compiler.can_compile()  # this machine has g++


def test_doctor_reports_a_broken_package_instead_of_crashing(capsys, monkeypatch):
    real_import = __import__

    def broken(name, *args, **kwargs):
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("builtins.__import__", broken)
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "torchvision   BROKEN: RuntimeError: operator torchvision::nms does not exist" in out
