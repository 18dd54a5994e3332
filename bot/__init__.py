"""voiceclone-bot: Slack voice recordings in, Tencent Cloud TRTC cloned voices out."""
