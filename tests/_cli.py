"""Run ``nbtl-recommend`` in this process, as the CLI tests do (imported by them)."""

from __future__ import annotations

import sys

import pytest


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``nbtl-recommend ARGS``: its exit code (0 when it returns), stdout and stderr."""
    from recommender.cli import main

    monkeypatch.setattr(sys, "argv", ["nbtl-recommend", *args])
    monkeypatch.setenv("COLUMNS", "160")  # a wide terminal: no names folded in tables
    with pytest.raises(SystemExit) as info:
        main()
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err
