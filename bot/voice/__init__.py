"""The recording itself: decoding with ffmpeg, finding the best speech, levelling, the report card, and the
pipeline from a file to a cloned voice that every front end (the CLI, Slack) shares. No Slack imports."""
