"""Redis: runs, the per-repository lock, once-only markers."""

from __future__ import annotations

from redis import Redis

from bot.runs import Run

PREFIX = "trackbot"
DELIVERY_TTL_S = 7 * 24 * 3600

# Compare-and-delete: only the holder releases the lock.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


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

    def latest(self, repo: str, track: int | None = None) -> Run | None:
        """The newest run of a repository; given a track, its newest real run (dry runs tell nothing
        about the track's PR)."""
        for run in self.runs(repo, limit=50):
            if track is None or (run.track == track and not run.dry_run):
                return run
        return None

    def for_branch(self, repo: str, branch: str) -> Run | None:
        """The newest run that used `branch`."""
        run_id = self.redis.hget(self._key("branch", repo), branch)
        if run_id is None:
            return None
        return self.get(run_id.decode() if isinstance(run_id, bytes) else run_id)

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

    def once(self, *key: str, ttl_s: int = DELIVERY_TTL_S) -> bool:
        """True the first time this key is seen (webhook deliveries, clicks, Slack retries)."""
        return bool(self.redis.set(self._key("once", *key), "1", nx=True, ex=ttl_s))

    def forget(self, *key: str) -> None:
        """Undo `once` so a failed action can be tried again."""
        self.redis.delete(self._key("once", *key))
