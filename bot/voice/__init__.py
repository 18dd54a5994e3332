"""The recording itself: decoding (FFmpeg's libraries in the bot's decoder processes, the ffmpeg command line for
what they do not vouch for), finding the best speech, levelling, the report card, and the pipeline from a file to
a cloned voice that every front end (the CLI, Slack) shares. No Slack imports."""
