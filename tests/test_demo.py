"""The README's run command on a machine with no credentials: `python -m bot` runs the offline demo."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def test_bare_command_without_credentials_runs_the_demo(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "TENCENTCLOUD_", "TRTC_"))}
    result = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "offline demo" in out
    # Progress first, then the consent question, then the VoiceId, as a user sees the thread. The status message
    # shows the newest stage when it is sent: on a loaded machine the download can be over before the first post,
    # which then says "Converting". (Later progress edits wait half a second for a newer state: the demo's quick
    # clone replaces its "Cloning" edit before it goes out, and the confirmation says it is cloning.)
    first = min(out.find(stage) % (len(out) + 1) for stage in ("Downloading", "Converting to 16 kHz mono WAV"))
    assert first < out.index("Ready to clone") < out.index("Confirmed by @U0DEMO: cloning")
    assert out.index("Confirmed by @U0DEMO: cloning") < out.index("Voice cloned: demo_voice_")
    # Plain text at a terminal: no emoji codes, no mrkdwn.
    assert "check mark (done)" in out and ":white_check_mark:" not in out
    assert "`" not in out and not re.search(r"\*[A-Za-z][^*\n]*\*", out)
    # The clip's Slack transcript went as the PromptText and the Language; the answer says so, with one length.
    assert "Language en, PromptText: Hello, this is a short recording of my voice," in out
    assert "Transcript: Slack, English" in out and "Sent all 22 s of the recording" in out
    assert "Audio used" not in out and "of speech" not in out
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir()), "the demo left files behind"
