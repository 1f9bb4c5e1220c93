"""Redis: runs, the per-repository lock, leases of running jobs, cancel requests, once-only markers."""

from __future__ import annotations

from typing import Any

from redis import Redis, WatchError

from bot.runs import Run, RunState

PREFIX = "trackbot"
DELIVERY_TTL_S = 7 * 24 * 3600
HELD_CHANGE_TTL_S = 14 * 24 * 3600  # how long a guardrail STOP's change waits for an exception

CANCEL_TTL_S = 24 * 3600

# Compare-and-delete: only the holder releases the lock (or drops a lease).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

# Renew-if-held: extend the key's life (ARGV[2] ms; 0 = no expiry) only while ARGV[1] holds it.
_RENEW = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('pexpire', KEYS[1], ARGV[2]) else redis.call('persist', KEYS[1]) end
return 1
"""

# A job's write of its run: only while its lease (KEYS[2]) is its own.
_SAVE_LEASED = """
if redis.call('get', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[1], ARGV[2])
return 1
"""

# The reaper's and cancel's write: only when nobody holds the run's lease (KEYS[2]) and the record
# is still exactly what the caller decided on (ARGV[1]).
_REPLACE_UNLEASED = """
if redis.call('exists', KEYS[2]) == 1 then return 0 end
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[1], ARGV[2])
return 1
"""


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class RunStore:
    """Where runs live, which run holds a repository, and what has already been done once."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def _key(self, *parts: str) -> str:
        return ":".join((PREFIX, *parts))

    def save(self, run: Run) -> None:
        """Persist a run (the whole record)."""
        self.redis.set(self._key("run", run.id), run.model_dump_json())

    def get(self, run_id: str) -> Run | None:
        """A run by id."""
        raw = self.redis.get(self._key("run", run_id))
        return None if raw is None else Run.model_validate_json(raw)

    def add(self, run: Run) -> None:
        """Save a new run and index it by repository and branch."""
        pipe = self.redis.pipeline()
        pipe.set(self._key("run", run.id), run.model_dump_json())
        pipe.lpush(self._key("runs", run.repo), run.id)
        pipe.ltrim(self._key("runs", run.repo), 0, 499)
        if not run.dry_run:  # merges are matched to the run that pushed the branch
            pipe.hset(self._key("branch", run.repo), run.branch, run.id)
        pipe.execute()

    def discard(self, run_id: str) -> None:
        """Forget a run record that never got queued (it lost the race for the lock)."""
        self.redis.delete(self._key("run", run_id))

    def runs(self, repo: str, limit: int = 10) -> list[Run]:
        """The latest runs of a repository, newest first."""
        ids = self.redis.lrange(self._key("runs", repo), 0, limit - 1)
        found = [self.get(i.decode() if isinstance(i, bytes) else i) for i in ids]
        return [run for run in found if run is not None]

    def latest(self, repo: str, track: int | None = None, plan: str = "tracks") -> Run | None:
        """The newest run of a repository; given a track (of plan kind `plan`), its newest real run (dry
        runs tell nothing about the track's PR)."""
        for run in self.runs(repo, limit=50):
            if track is None or (run.track == track and run.plan == plan and not run.dry_run):
                return run
        return None

    def index_branch(self, repo: str, branch: str, run_id: str) -> None:
        """Match merges of `branch` to run `run_id` too (the advance's own PR)."""
        self.redis.hset(self._key("branch", repo), branch, run_id)

    def for_branch(self, repo: str, branch: str) -> Run | None:
        """The newest run that used `branch`."""
        run_id = self.redis.hget(self._key("branch", repo), branch)
        if run_id is None:
            return None
        return self.get(run_id.decode() if isinstance(run_id, bytes) else run_id)

    def claim(self, run: Run) -> str | None:
        """Take the repository for a new run and list it. Returns None on success, else the holder's id.

        The record is saved before the lock is taken: a concurrent claim that finds the lock must find
        its holder's record too, or it would take the lock over as stale and both runs would start.
        """
        self.save(run)
        holder = self.try_lock(run.repo, run.id)
        if holder is not None:
            self.discard(run.id)
            return holder
        self.add(run)
        return None

    def try_lock(self, repo: str, run_id: str) -> str | None:
        """Take the repository's lock for `run_id`. Returns None on success, else the holder's run id.

        A lock held by a run that is no longer queued or running is stale (its worker died before
        releasing it) and is taken over.
        """
        key = self._key("lock", repo)
        for _ in range(3):
            if self.redis.set(key, run_id, nx=True):
                return None
            raw = self.redis.get(key)
            if raw is None:
                continue
            holder = raw.decode() if isinstance(raw, bytes) else raw
            run = self.get(holder)
            if run is not None and run.state.active:
                return holder
            self.release_lock(repo, holder)
        return self.lock_holder(repo)

    def lock_holder(self, repo: str) -> str | None:
        """The run id holding the repository, if any."""
        raw = self.redis.get(self._key("lock", repo))
        return None if raw is None else (raw.decode() if isinstance(raw, bytes) else raw)

    def release_lock(self, repo: str, run_id: str) -> bool:
        """Release the repository's lock if `run_id` holds it."""
        return bool(self.redis.eval(_RELEASE, 1, self._key("lock", repo), run_id))

    def hold_lock(self, repo: str, run_id: str, ttl_s: float | None) -> bool:
        """True when `run_id` holds the repository's lock, which then lives `ttl_s` more seconds.

        A queued run's lock has no TTL (`ttl_s` None: it is made persistent): no process keeps it
        alive yet. A running job renews it with its heartbeat, so a dead job's lock expires.
        """
        ms = 0 if ttl_s is None else max(1, int(ttl_s * 1000))
        return bool(self.redis.eval(_RENEW, 1, self._key("lock", repo), run_id, ms))

    # -- a running job's lease -------------------------------------------------------------------

    def take_lease(self, run_id: str, token: str, ttl_s: float) -> bool:
        """Start the lease of the job running `run_id` (False: someone holds it already)."""
        return bool(self.redis.set(self._key("lease", run_id), token, nx=True, px=max(1, int(ttl_s * 1000))))

    def renew_lease(self, run_id: str, token: str, ttl_s: float) -> bool:
        """Extend the lease while `token` holds it; False when it expired (the run is lost to this job)."""
        return bool(self.redis.eval(_RENEW, 1, self._key("lease", run_id), token, max(1, int(ttl_s * 1000))))

    def lease_holder(self, run_id: str) -> str | None:
        """The token of the job holding the run's lease, if it is alive."""
        raw = self.redis.get(self._key("lease", run_id))
        return None if raw is None else _text(raw)

    def drop_lease(self, run_id: str, token: str) -> bool:
        """End the lease (only its holder does)."""
        return bool(self.redis.eval(_RELEASE, 1, self._key("lease", run_id), token))

    def save_leased(self, run: Run, token: str) -> bool:
        """Persist a run from the job that holds its lease; False (nothing written) once the lease is lost."""
        keys = (self._key("run", run.id), self._key("lease", run.id))
        return bool(self.redis.eval(_SAVE_LEASED, 2, *keys, token, run.model_dump_json()))

    def get_with_raw(self, run_id: str) -> tuple[Run, bytes] | None:
        """A run and the exact record it was read from (for `replace_unleased`)."""
        raw = self.redis.get(self._key("run", run_id))
        if raw is None:
            return None
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        return Run.model_validate_json(data), data

    def replace_unleased(self, run: Run, expected_raw: bytes) -> bool:
        """Write `run` if no job holds its lease and its record is still `expected_raw` (compare-and-set).

        The reaper and cancel decide on a run they read; this makes sure no job changed it meanwhile.
        """
        keys = (self._key("run", run.id), self._key("lease", run.id))
        return bool(self.redis.eval(_REPLACE_UNLEASED, 2, *keys, expected_raw, run.model_dump_json()))

    def patch(self, run_id: str, **fields: Any) -> bool:
        """Set a few fields of a stored run without losing a concurrent write (optimistic retry)."""
        key = self._key("run", run_id)
        for _ in range(20):
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        return False
                    run = Run.model_validate_json(raw)
                    pipe.multi()
                    pipe.set(key, run.model_copy(update=fields).model_dump_json())
                    pipe.execute()
                    return True
                except WatchError:
                    continue
        return False

    def active_runs(self, repos: list[str] | None = None, per_repo: int = 20) -> list[Run]:
        """Queued and running runs: the latest of every repository with runs (or of `repos`)."""
        names = set(repos or [])
        for key in self.redis.scan_iter(match=self._key("runs", "*"), count=200):
            names.add(_text(key).split(":", 2)[2])
        found: list[Run] = []
        for repo in sorted(names):
            found += [run for run in self.runs(repo, limit=per_repo) if run.state.active]
        return found

    def recent_runs(self, states: tuple[RunState, ...], per_repo: int = 20) -> list[Run]:
        """The latest runs of every repository that are in one of `states`."""
        found: list[Run] = []
        for key in self.redis.scan_iter(match=self._key("runs", "*"), count=200):
            repo = _text(key).split(":", 2)[2]
            found += [run for run in self.runs(repo, limit=per_repo) if run.state in states]
        return found

    # -- cancel requests -------------------------------------------------------------------------

    def request_cancel(self, run_id: str, user: str) -> bool:
        """Ask the job running `run_id` to stop. True if this is the first request (the first user counts).

        The job's heartbeat sees it within a second or so and stops the agent's whole process group;
        a queued run is cancelled by `bot.cancel.cancel_queued`, which calls this first.
        """
        return bool(self.redis.set(self._key("cancel", run_id), user, nx=True, ex=CANCEL_TTL_S))

    def cancel_requested(self, run_id: str) -> str | None:
        """Who asked to cancel the run, if anyone did."""
        raw = self.redis.get(self._key("cancel", run_id))
        return None if raw is None else _text(raw)

    def clear_cancel(self, run_id: str) -> None:
        """Forget a cancel request (the run has ended)."""
        self.redis.delete(self._key("cancel", run_id))

    def once(self, *key: str, ttl_s: int = DELIVERY_TTL_S) -> bool:
        """True the first time this key is seen (webhook deliveries, clicks, Slack retries)."""
        return bool(self.redis.set(self._key("once", *key), "1", nx=True, ex=ttl_s))

    def forget(self, *key: str) -> None:
        """Undo `once` so a failed action can be tried again."""
        self.redis.delete(self._key("once", *key))

    def hold_change(self, run_id: str, base_sha: str, patch: bytes, ttl_s: int = HELD_CHANGE_TTL_S) -> None:
        """Keep a STOPPED run's change (a binary patch against `base_sha`) for a guardrail exception."""
        key = self._key("held", run_id)
        pipe = self.redis.pipeline()
        pipe.delete(key)
        pipe.hset(key, mapping={"base": base_sha, "patch": patch})
        pipe.expire(key, ttl_s)
        pipe.execute()

    def held_change(self, run_id: str) -> tuple[str, bytes] | None:
        """(base sha, patch) held for `run_id`, or None when there is none (or it expired)."""
        raw = {_text(k): v for k, v in self.redis.hgetall(self._key("held", run_id)).items()}
        base, patch = raw.get("base"), raw.get("patch")
        if base is None or patch is None:
            return None
        return _text(base), patch if isinstance(patch, bytes) else str(patch).encode()
