FROM python:3.12-slim

# Debian's ffmpeg (the imageio-ffmpeg wheel is the fallback for machines without one), and libpq for psycopg
# when DATABASE_URL is postgresql:// (docker-compose.yml; harmless when psycopg brings its own binary build).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg libpq5 \
 && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY bot ./bot
COPY handlers ./handlers
RUN pip install .

RUN useradd --create-home --uid 10001 bot && mkdir -p /data && chown bot /data
USER bot
ENV DATABASE_URL=sqlite:////data/voiceclone.db PORT=3000
VOLUME ["/data"]
EXPOSE 3000
STOPSIGNAL SIGTERM
# /healthz answers 200 once the bot serves (HTTP or Socket Mode) and 503 while starting or stopping; urlopen
# raises on anything but 2xx. Python is the one tool the slim image is sure to have.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=4)"]
CMD ["voiceclone-bot", "run"]
