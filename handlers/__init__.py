"""Slack listeners, registered by one register(app, ...) per module."""
