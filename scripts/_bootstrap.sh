# Sourced by scripts/demo and scripts/test: make .venv with Python 3.11+ and install the project.
# Re-installs only when pyproject.toml changes (a stamp holds its hash).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "trackbot needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

ensure_venv() {
  local extras="$1"  # "" or "[dev]"
  local py
  if [ ! -x .venv/bin/python ]; then
    py="$(find_python)"
    echo "creating .venv with $($py --version)" >&2
    "$py" -m venv .venv
  fi
  local stamp=".venv/.trackbot-installed${extras}"
  local want
  want="$(cat pyproject.toml | .venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing trackbot and its dependencies into .venv ..." >&2
    # Output goes to a log, shown only when the install fails.
    if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip \
           && .venv/bin/python -m pip install --disable-pip-version-check -e ".${extras}"; } \
         > .venv/install.log 2>&1; then
      cat .venv/install.log >&2
      echo "installing into .venv failed (log above, also in .venv/install.log)" >&2
      return 1
    fi
    echo "$want" > "$stamp"
  fi
}

ensure_sandbox_tools() {
  # The sandbox the agent and the gates run in: bubblewrap, and socat for the agent's egress proxy.
  # Installed with apt when we may (root on Debian/Ubuntu); elsewhere the sandbox tests say why they skip.
  command -v bwrap >/dev/null 2>&1 && command -v socat >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing bubblewrap and socat (the agent's sandbox) ..." >&2
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap socat; } \
         > .venv/apt.log 2>&1; then
      cat .venv/apt.log >&2
      echo "installing bubblewrap and socat failed (log above)" >&2
      return 1
    fi
  else
    echo "note: bubblewrap or socat is missing; install them (apt-get install bubblewrap socat) to run the sandbox tests" >&2
  fi
}
