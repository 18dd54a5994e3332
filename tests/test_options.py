"""Options typed in a share or a command."""

from __future__ import annotations

import pytest

from bot.errors import OptionError
from bot.voice.options import parse_options


def test_options_in_any_order_with_other_words():
    opts = parse_options('please clone this text="Hello there, friend" lang=EN name=alice model=flow_01_ex thanks')
    assert (opts.name, opts.language, opts.model, opts.text) == ("alice", "en", "flow_01_ex", "Hello there, friend")


def test_curly_quotes_and_slack_escaping():
    opts = parse_options("text=\u201cfish &amp; chips &lt;3\u201d name=bob")
    assert opts.text == "fish & chips <3"
    assert opts.name == "bob"


def test_nothing_given_means_defaults():
    assert parse_options(None).as_dict() == {
        "name": None,
        "language": None,
        "model": None,
        "text": None,
        "denoise": None,
    }
    assert parse_options("just a voice memo").name is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("denoise=on", True), ("DENOISE=Off", False), ("name=a denoise=yes", True), ("no option", None)],
)
def test_denoise_on_or_off(text, expected):
    assert parse_options(text).denoise is expected


@pytest.mark.parametrize("text", ["model=gpt4", "lang=english", "denoise=maybe"])
def test_bad_values_are_refused(text):
    with pytest.raises(OptionError):
        parse_options(text)
