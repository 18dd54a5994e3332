"""Tencent Cloud TRTC: the VoiceClone and TextToSpeech clients, and the rate limits they share (in process or in
Redis, one window per action)."""
