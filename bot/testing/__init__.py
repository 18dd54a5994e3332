"""The bot's test kit, shipped with it: local stand-ins of Slack (bot.testing.standin_slack) and TRTC
(bot.testing.standin_trtc) speaking real HTTP on loopback, real speech to feed them (bot.testing.speech), the one
driver that starts the bot against them (bot.testing.driver), and the offline demo and `python -m bot standins`
built on those."""

from __future__ import annotations

from bot.testing.driver import bot_environ, free_port

__all__ = ["bot_environ", "free_port"]
