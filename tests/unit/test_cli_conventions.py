"""The conventions every ``recsys`` command keeps: ``--version``, ``-v`` on either side of the
subcommand, defaults in ``--help``, and errors as JSON under ``--json`` with documented exit
codes."""

from __future__ import annotations

import argparse
import json
import re
from importlib.metadata import version
from pathlib import Path

import pytest

from recsys.cli import build_parser, main
from recsys.cli.common import ERROR, QUARANTINED, USAGE, HelpFormatter

README = Path(__file__).resolve().parents[2] / "README.md"


def _parsers(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_version_is_the_installed_package(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"recsys {version('recsys')}"


def test_verbose_goes_before_or_after_the_subcommand():
    parser = build_parser()
    assert parser.parse_args(["-v", "registry"]).verbose is True
    assert parser.parse_args(["registry", "-v"]).verbose is True
    assert parser.parse_args(["registry", "history", "--verbose"]).verbose is True
    assert parser.parse_args(["registry"]).verbose is False


def test_every_help_shows_every_default_and_every_command_has_json():
    checked = 0
    for path, parser in _parsers(build_parser()):
        text = " ".join(parser.format_help().split())  # help wraps lines anywhere
        options = {a.dest for a in parser._actions}
        if path and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            assert "json" in options and "verbose" in options, path  # a command, not a group
        for action in parser._actions:
            if HelpFormatter._shown_default(action):
                assert f"default: {action.default}" in text, (path, action.dest)
                checked += 1
    assert checked >= 10  # train --mode, serve --port, registry reader --username, ...


def test_errors_are_json_with_their_exit_code_under_json(settings, capsys):
    cases = [
        (["train", "--mode", "sideways", "--json"], USAGE, "invalid choice: 'sideways'"),
        (["registry", "live-at", "yesterday-ish", "--json"], ERROR, "yesterday-ish"),
        (["promote", "--version", "99", "--json"], ERROR, "version=99) not found"),
    ]
    for argv, code, words in cases:
        with pytest.raises(SystemExit) as done:
            main(argv)
        out, _ = capsys.readouterr()
        assert done.value.code == code, argv
        error = json.loads(out)
        assert error["exit_code"] == code and words in error["error"], (argv, error)
        assert error["error"].startswith(f"recsys {argv[0]}"), error

    with pytest.raises(SystemExit) as done:  # without --json: one line on stderr, nothing else
        main(["registry", "live-at", "yesterday-ish"])
    out, err = capsys.readouterr()
    assert done.value.code == ERROR and out == ""
    assert err.startswith("recsys registry: error:") and "yesterday-ish" in err


def test_the_exit_codes_are_documented():
    text = README.read_text()
    section = re.search(r"^#+ Exit codes\n(.*?)(?=^#)", text, re.M | re.S)
    assert section, "README.md has no 'Exit codes' section"
    for code in (0, ERROR, USAGE, QUARANTINED):
        assert re.search(rf"^\| `{code}` \|", section[1], re.M), code


def test_serve_takes_a_rate_per_key(settings, monkeypatch):
    import recsys.serving.app as app

    got = {}
    monkeypatch.setattr(app, "serve", lambda settings, **kw: got.update(kw))
    main(["serve", "--rate-per-key", "50"])
    assert (got["serving"].rate_per_key, got["serving"].rate_burst) == (50, 100)
    assert got["serving"].require_keys is True
    with pytest.raises(SystemExit) as done:
        main(["serve", "--rate-per-key", "0"])  # ServingConfig refuses it: a clear error
    assert done.value.code == ERROR
