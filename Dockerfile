# One image for both processes of the Procfile: `trackbot web` and `trackbot worker`.
FROM python:3.12-slim

# git for the worker's clones; Node.js for the Codex CLI (the default agent).
ARG CODEX_VERSION=latest
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates nodejs npm \
 && npm install -g "@openai/codex@${CODEX_VERSION}" \
 && npm cache clean --force \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
RUN pip install --no-cache-dir .

RUN useradd --create-home --uid 10001 trackbot && mkdir -p /data && chown trackbot /data
USER trackbot
ENV TRACKBOT_WORK_DIR=/data PORT=3000 PYTHONUNBUFFERED=1
EXPOSE 3000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"3000\")}/healthz', timeout=3)" || exit 1

CMD ["trackbot", "web"]
