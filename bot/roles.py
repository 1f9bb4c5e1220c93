"""Who may run tracks and who may approve advances: Slack user IDs and Slack user groups.

Maintainers (TRACKBOT_MAINTAINERS, TRACKBOT_MAINTAINER_GROUPS) approve advances and may always
run. Runners (TRACKBOT_RUNNERS, TRACKBOT_RUNNER_GROUPS) may `/track run`; with neither configured,
anyone may. A group's members come from Slack's `usergroups.users.list` (scope `usergroups:read`),
cached in Redis for a few minutes. When Slack cannot answer, the last cached members are used;
with none cached, the group counts as empty (only the listed user IDs count) and it is logged.

With TRACKBOT_TWO_PERSON_RULE on, whoever queued a run may not approve advancing it.
"""

from __future__ import annotations

import json
import logging
import time

from redis import Redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.config import Settings

log = logging.getLogger(__name__)

CACHE_PREFIX = "trackbot:usergroup"
GROUP_TTL_S = 300  # how long fetched members count as fresh
KEEP_S = 30 * 24 * 3600  # how long the last members are kept as the fallback when Slack fails
FAILURE_BACKOFF_S = 30  # after a failed fetch, use the fallback this long before asking Slack again
# The bot token scopes roles need beyond the basics (manifest.yml asks for them).
ROLE_SLACK_SCOPES: tuple[str, ...] = ("usergroups:read",)


def user_mention(user: str) -> str:
    """`<@U…>`."""
    return f"<@{user}>"


def group_mention(group: str) -> str:
    """`<!subteam^S…>`: Slack shows the group's handle (and notifies nobody in an ephemeral)."""
    return f"<!subteam^{group}>"


def _join(items: list[str]) -> str:
    return ", ".join(dict.fromkeys(items))


class Roles:
    """Maintainers and runners, by user ID and by Slack user group."""

    def __init__(self, settings: Settings, client: WebClient, redis: Redis, ttl_s: int = GROUP_TTL_S) -> None:
        self.settings = settings
        self.client = client
        self.redis = redis
        self.ttl_s = ttl_s

    # -- groups -------------------------------------------------------------------------------------

    def _key(self, group: str, *suffix: str) -> str:
        return ":".join((CACHE_PREFIX, group, *suffix))

    def _cached(self, group: str) -> tuple[frozenset[str], float] | None:
        """The last fetched members of a group and when they were fetched, if any."""
        raw = self.redis.get(self._key(group))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return frozenset(str(u) for u in data["users"]), float(data["at"])
        except (ValueError, KeyError, TypeError):
            return None

    def group_members(self, group: str) -> frozenset[str]:
        """The user IDs in a Slack user group: fresh from the cache, else from Slack, else the last known."""
        cached = self._cached(group)
        if cached is not None and time.time() - cached[1] < self.ttl_s:
            return cached[0]
        if self.redis.exists(self._key(group, "backoff")):
            return cached[0] if cached is not None else frozenset()
        try:
            response = self.client.usergroups_users_list(usergroup=group)
            users = [str(u) for u in response.get("users") or []]
        except (SlackApiError, SlackClientError, OSError) as error:
            reason = error.response.get("error", "error") if isinstance(error, SlackApiError) else str(error)
            # Do not ask Slack again on every check while it fails.
            self.redis.set(self._key(group, "backoff"), "1", ex=FAILURE_BACKOFF_S)
            if cached is not None:
                log.warning("usergroups.users.list %s failed (%s); using its last known members", group, reason)
                return cached[0]
            log.error(
                "usergroups.users.list %s failed (%s) and nothing is cached; only listed user IDs count "
                "(does the app have the usergroups:read scope?)",
                group,
                reason,
            )
            return frozenset()
        pipe = self.redis.pipeline()
        pipe.set(self._key(group), json.dumps({"users": users, "at": time.time()}), ex=KEEP_S)
        pipe.delete(self._key(group, "backoff"))
        pipe.execute()
        return frozenset(users)

    def _in_any(self, user: str, groups: list[str]) -> bool:
        return any(user in self.group_members(group) for group in groups)

    # -- questions ----------------------------------------------------------------------------------

    def is_maintainer(self, user: str) -> bool:
        """Listed in TRACKBOT_MAINTAINERS, or a member of a TRACKBOT_MAINTAINER_GROUPS group."""
        settings = self.settings
        return user in settings.maintainers or self._in_any(user, settings.maintainer_groups)

    def is_runner(self, user: str) -> bool:
        """Listed in TRACKBOT_RUNNERS, or a member of a TRACKBOT_RUNNER_GROUPS group."""
        settings = self.settings
        return user in settings.runners or self._in_any(user, settings.runner_groups)

    def anyone_may_run(self) -> bool:
        """No runners and no runner groups configured."""
        return not self.settings.runners and not self.settings.runner_groups

    def may_run(self, user: str) -> bool:
        """Runners and maintainers may start runs; with no runners configured, anyone may."""
        return self.anyone_may_run() or self.is_runner(user) or self.is_maintainer(user)

    def who_may_approve(self) -> str:
        """The maintainers and maintainer groups as Slack mentions, e.g. `<@U1>, <!subteam^S1>`."""
        settings = self.settings
        return _join(
            [*(user_mention(u) for u in settings.maintainers), *(group_mention(g) for g in settings.maintainer_groups)]
        )

    def who_may_run(self) -> str:
        """The runners and maintainers (users, then groups) as Slack mentions; `anyone` when unrestricted."""
        settings = self.settings
        if self.anyone_may_run():
            return "anyone"
        users = [*settings.runners, *settings.maintainers]
        groups = [*settings.runner_groups, *settings.maintainer_groups]
        return _join([*(user_mention(u) for u in users), *(group_mention(g) for g in groups)])

    def other_approvers(self, user: str) -> str:
        """Who besides `user` may approve: other listed maintainers, and groups with another member."""
        settings = self.settings
        users = [user_mention(m) for m in settings.maintainers if m != user]
        groups = [group_mention(g) for g in settings.maintainer_groups if self.group_members(g) - {user}]
        return _join([*users, *groups])

    def check_approver(self, user: str, run_requested_by: str | None) -> str | None:
        """Why `user` may not approve advancing a run queued by `run_requested_by`; None when they may.

        Refuses non-maintainers (naming who may approve) and, with the two-person rule on, the
        maintainer who queued the run (naming who else may).
        """
        if not self.is_maintainer(user):
            return f":no_entry: Only a maintainer can approve advancing NEXT_TRACK: {self.who_may_approve()}."
        if self.settings.two_person_rule and run_requested_by is not None and user == run_requested_by:
            others = self.other_approvers(user)
            if not others:
                return (
                    ":no_entry: Two-person rule: you queued this run, so another maintainer must approve it, "
                    "and no other maintainer is configured. Ask an operator to add one "
                    "(TRACKBOT_MAINTAINERS or TRACKBOT_MAINTAINER_GROUPS)."
                )
            return f":no_entry: Two-person rule: you queued this run, so another maintainer must approve it: {others}."
        return None
