"""The entry point: usage errors and BraincamErrors end in a short message, never a traceback."""

import subprocess
import sys


def braincam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "braincam", *args], capture_output=True,
                          text=True, timeout=120)


def test_unknown_option_is_a_usage_error_without_traceback(tmp_path):
    result = braincam("train", str(tmp_path), "--out", str(tmp_path / "run"), "--epochs", "1")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()  # one line, like braincam's own errors
    assert line.startswith("error: No such option: --epochs")
    assert line.endswith("braincam train --help)")  # run here as python -m braincam


def test_braincam_alone_shows_its_help():
    result = braincam()
    assert "Usage:" in result.stdout and "train" in result.stdout


def test_braincam_error_is_one_line(tmp_path):
    result = braincam("audit-data", str(tmp_path / "missing"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing'}: not a directory; expected ROOT/<class>/<images> or "
        "ROOT/<split>/<class>/<images>"
    ]


def test_ctrl_c_says_so(monkeypatch, capsys):
    """Typer turns a KeyboardInterrupt into exit code 130, which the entry point names."""
    import pytest

    from braincam import cli

    monkeypatch.setattr(cli, "app", lambda standalone_mode: cli.INTERRUPTED)
    for command, said in (
            ("train", "interrupted"),
            ("run", "interrupted (the same braincam run command resumes from its finished "
                    "stages)"),
            ("cv", "interrupted (the same braincam cv command resumes from its finished "
                   "folds)")):
        monkeypatch.setattr(sys, "argv", ["braincam", command, "DATA"])
        with pytest.raises(SystemExit) as stop:
            cli.main()
        assert stop.value.code == 130
        assert capsys.readouterr().err.strip() == said


def test_a_command_of_one_process_refuses_torchrun(monkeypatch, capsys):
    """Under torchrun every process would run it and write the same files."""
    import pytest

    from braincam import cli

    ran = []
    monkeypatch.setattr(cli, "app", lambda standalone_mode: ran.append(sys.argv) or 0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(sys, "argv", ["braincam", "evaluate", "RUN"])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 2 and ran == []
    assert capsys.readouterr().err.strip() == (
        "error: braincam evaluate runs in one process; start it without torchrun (train, "
        "segment, explain, predict run under torchrun)")
    monkeypatch.setattr(sys, "argv", ["braincam", "train", "DATA"])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 0 and len(ran) == 1


def test_a_folder_it_may_not_write_or_a_full_disk_is_one_line(monkeypatch, capsys):
    import errno

    import pytest

    from braincam import cli

    def fail(error):
        def app(standalone_mode):
            raise error
        return app

    monkeypatch.setattr(sys, "argv", ["braincam", "train", "DATA"])
    for error, said in ((PermissionError(errno.EACCES, "Permission denied", "/runs/x"),
                         "error: /runs/x: Permission denied"),
                        (OSError(errno.ENOSPC, "No space left on device"),
                         "error: No space left on device")):
        monkeypatch.setattr(cli, "app", fail(error))
        with pytest.raises(SystemExit) as stop:
            cli.main()
        assert stop.value.code == 2 and capsys.readouterr().err.strip() == said
    monkeypatch.setattr(cli, "app", fail(OSError(errno.EIO, "I/O error")))  # a fault: raised
    with pytest.raises(OSError, match="I/O error"):
        cli.main()


def test_sigterm_ends_a_command_as_ctrl_c_and_puts_back_what_force_set_aside(
        monkeypatch, capsys, tmp_path):
    """`timeout` and `kill` send SIGTERM: the command's cleanup still runs, so the finished
    output that --force had set aside comes back."""
    import os
    import signal

    import pytest

    from braincam import cli
    from braincam.runs import prepare_output_dir

    out = tmp_path / "run"
    prepare_output_dir(out)
    (out / "model.safetensors").write_text("finished")

    def app(standalone_mode):
        prepare_output_dir(out, force=True)
        (out / "partial.csv").write_text("new")
        os.kill(os.getpid(), signal.SIGTERM)
        return 0

    monkeypatch.setattr(cli, "app", app)
    monkeypatch.setattr(sys, "argv", ["braincam", "train", "DATA"])
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 130 and capsys.readouterr().err.strip() == "interrupted"
    assert sorted(p.name for p in out.iterdir()) == [".braincam-output", "model.safetensors"]
    assert signal.getsignal(signal.SIGTERM) == before
