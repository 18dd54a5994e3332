"""What the tests share: the in-process bot (harness), the bot as a process and what Slack sends and shows
(driving), test media made from the shipped speech (media), a PostgreSQL database per test (postgres), and the
texts users must read, written out (expected_text). The fixtures built on them are in tests/conftest.py."""
