"""Benchmarks: the real bot in its own process, on loopback, against the Slack and TRTC stand-ins."""
