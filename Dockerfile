# One image for both processes of the Procfile: `trackbot web` (the default command) and
# `trackbot worker` (override the command; the health check below serves both).
FROM python:3.12-slim

# git for the worker's clones and pushes; bubblewrap and socat for the sandbox the agent and the
# gates run in (the container must allow user namespaces: see the README's Threat model); tini as PID 1, so the agents' orphaned children are
# reaped and SIGTERM reaches trackbot; Node.js for the Codex CLI (the default agent).
# EXTRA_APT_PACKAGES adds what your tracks' gates need, e.g. "golang-go" for gofmt and go test
# (a gate whose tool is missing is reported as "not run", never as passed).
ARG CODEX_VERSION=latest
ARG EXTRA_APT_PACKAGES=""
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates tini nodejs npm \
      bubblewrap socat ${EXTRA_APT_PACKAGES} \
 && npm install -g "@openai/codex@${CODEX_VERSION}" \
 && npm cache clean --force \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first (a layer that survives code changes), then the code.
COPY pyproject.toml README.md ./
RUN mkdir -p bot handlers && touch bot/__init__.py handlers/__init__.py \
 && pip install --no-cache-dir . && pip uninstall -y trackbot
COPY bot ./bot
COPY handlers ./handlers
RUN pip install --no-cache-dir --no-deps . && trackbot --help > /dev/null

# Not root: the agent runs as this user too. /data holds the clones (TRACKBOT_WORK_DIR); give each
# worker its own (a volume or a tmpfs), never one shared by two workers.
RUN useradd --create-home --uid 10001 trackbot && mkdir -p /data && chown trackbot /data
USER trackbot
ENV TRACKBOT_WORK_DIR=/data PORT=3000 PYTHONUNBUFFERED=1 TRACKBOT_LOG_FORMAT=json
EXPOSE 3000

# Healthy, for either process: `trackbot web` answers /readyz (Redis answers, the Slack and GitHub
# credentials were accepted), or else a `trackbot worker` of this container keeps its heartbeat.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"3000\")}/readyz', timeout=4)" 2>/dev/null \
   || trackbot worker --check

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["trackbot", "web"]
