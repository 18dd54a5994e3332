"""Local stand-ins of Slack and of the TRTC API, speaking real HTTP on loopback (tests, demo, bench)."""
