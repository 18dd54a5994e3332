"""The command line: `python -m bot clone|check|say|voices|audit|...`, the operator's tools beside the bot."""
