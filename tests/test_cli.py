from qlab.lab.tools import cli


def test_doctor_reports_the_machine(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "int8 engines" in out and "all good" in out


def test_doctor_wants_a_cpp_compiler_for_lesson_07(capsys, monkeypatch):
    monkeypatch.setattr(cli, "_cpp_compiler", lambda: None)
    assert cli.main(["doctor"]) == 1
    assert "c++ compiler  MISSING" in capsys.readouterr().out
