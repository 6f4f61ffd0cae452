"""Exit statuses of ``biomarkers.cli.main`` when a command body ends by an interruption or an exit
request that typer turns into a returned code (non-standalone mode) instead of raising it."""

from __future__ import annotations

import pytest
import typer

from biomarkers.cli import app, main


@pytest.fixture
def command():
    """Register a hidden command on the real app for one test, then remove it."""
    added = []

    def register(fn):
        app.command("zz-test-command", hidden=True)(fn)
        added.append(app.registered_commands[-1])

    yield register
    for c in added:
        app.registered_commands.remove(c)


def test_keyboard_interrupt_in_a_command_exits_130_with_the_interruption_line(command, capsys):
    def body():
        raise KeyboardInterrupt  # e.g. a library restored Python's default SIGINT handler

    command(body)
    assert main(["zz-test-command"]) == 130  # not 0: the run did not complete
    assert "interrupted: biomarkers zz-test-command" in capsys.readouterr().err


def test_an_exit_code_requested_by_a_command_is_kept(command):
    def body():
        raise typer.Exit(4)

    command(body)
    assert main(["zz-test-command"]) == 4
