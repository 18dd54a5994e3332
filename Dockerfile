FROM python:3.12-slim

# Debian's ffmpeg (the imageio-ffmpeg wheel is the fallback for machines without one).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
RUN pip install .

RUN useradd --create-home --uid 10001 bot && mkdir -p /data && chown bot /data
USER bot
ENV DATABASE_URL=sqlite:////data/voiceclone.db PORT=3000
VOLUME ["/data"]
EXPOSE 3000
STOPSIGNAL SIGTERM
CMD ["voiceclone-bot", "run"]
