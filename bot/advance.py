"""After the merge: the prompt in the run's thread, and the approved advance of NEXT_TRACK.

The advance rewrites only the `next_track` line through the contents API with the file's sha:
a stale sha means someone else changed the knob, so it is re-read and re-checked; it never
advances twice. When a branch rule protects main (GitHub answers the write with a rule-violation
409, not a stale sha), or `.trackbot.toml` says `[advance] mode = "pull_request"`, the advance is
its own one-line PR with the same commit message; trackbot merges it when the rules let it, and
otherwise the thread follows that PR until someone merges it.
"""

from __future__ import annotations

import logging

from bot import audit
from bot.adapters.github import GitHubError, GitHubFiles, GitHubRepo, RuleViolation, StaleFile
from bot.adapters.slack import SlackError
from bot.commands import Reply
from bot.knob import KnobError, advance_knob_text, parse_knob
from bot.plan import TrackDoc, resolve_plan_doc
from bot.render import knob_name, mention, merge_prompt, section
from bot.repo_rules import RepoRules, RepoRulesError
from bot.runs import Run, RunState
from bot.services import Services

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


class Advancer:
    """Merge prompts, approvals, dismissals and `/track advance`."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def prompt_for_merge(self, repo: str, branch: str, pr_number: int, merged_by: str | None) -> Run | None:
        """A track branch's PR merged: ask in its run's thread whether to advance. Once per merge."""
        services = self.services
        run = services.store.for_branch(repo, branch)
        if run is not None and run.advance_pr_number is not None and run.advance_pr_number == pr_number:
            return self.advance_pull_merged(run, merged_by)
        if run is None or (run.pr_number is not None and run.pr_number != pr_number):
            log.info("merged PR #%s (%s) belongs to no run; no prompt", pr_number, branch)
            return None
        if run.state not in (RunState.PR_OPEN, RunState.MERGED):
            return None
        if not services.store.once("merge-prompt", run.repo, str(pr_number)):
            return None
        run.state, run.pr_number, run.merged_by = RunState.MERGED, pr_number, merged_by
        services.store.save(run)
        text, blocks = merge_prompt(run, pr_number, run.track + 1)
        try:
            run.prompt_ts = services.poster.post(run.channel, text, blocks, thread_ts=run.thread_ts)
        except SlackError:
            services.store.forget("merge-prompt", run.repo, str(pr_number))
            raise
        services.store.save(run)
        return run

    def advance_pull_merged(self, run: Run, merged_by: str | None) -> Run | None:
        """The advance's own PR merged: NEXT_TRACK is advanced; say so in the thread. Once per merge
        (the webhook, the poller and trackbot's own merge may all see it)."""
        services = self.services
        if run.state is not RunState.ADVANCING or run.advance_pr_number is None:
            return None
        if not services.store.once("advance-merged", run.repo, str(run.advance_pr_number)):
            return None
        self._mark_advanced(run, run.advance_approved_by or merged_by or "?", run.track + 1, merged_by=merged_by)
        return run

    def refusal(self, user: str, run: Run | None, action: str) -> Reply | None:
        """Who may not approve (non-maintainers; with the two-person rule, whoever queued the run),
        recorded in the audit log; None when `user` may."""
        services = self.services
        why = services.roles.check_approver(user, run.requested_by if run else None)
        if why is None:
            return None
        repo = run.repo if run else ""
        audit.record(services.redis, "refused", user, repo, action, run.id if run else None, why)
        return Reply(why)

    def approve(self, run_id: str, user: str) -> Reply:
        """A click on Approve: a maintainer's advances the knob; anyone else is told who may."""
        run = self.services.store.get(run_id)
        refusal = self.refusal(user, run, "approve advance")
        if refusal is not None:
            return refusal
        if run is None:
            return Reply("That run is no longer known; use `/track status`.")
        return self.advance(run, user)

    def dismiss(self, run_id: str, user: str) -> Reply:
        """A maintainer declines this prompt; NEXT_TRACK stays as it is."""
        services = self.services
        if not services.roles.is_maintainer(user):
            audit.record(services.redis, "refused", user, "", "dismiss advance", run_id)
            return Reply(f":no_entry: Only a maintainer can dismiss this: {services.roles.who_may_approve()}.")
        store = self.services.store
        run = store.get(run_id)
        if run is None or run.state is not RunState.MERGED:
            return Reply("Nothing to dismiss: that run is not waiting for an advance.")
        run.state = RunState.DISMISSED
        store.save(run)
        audit.record(services.redis, "dismissed", user, run.repo, "NEXT_TRACK unchanged", run.id)
        self._close_prompt(
            run,
            f"Advance dismissed by {mention(user)}; NEXT_TRACK stays at {run.track}. "
            "`/track advance` can still advance it.",
        )
        return Reply("Dismissed.", ephemeral=True)

    def advance_command(self, repo: str, user: str, channel: str, plan: str = "tracks") -> Reply:
        """`/track advance [--plan NAME]`: a maintainer advances once the current track's PR is merged."""
        services = self.services
        if not services.roles.is_maintainer(user):
            return self.refusal(user, None, "/track advance") or Reply("Only maintainers advance NEXT_TRACK.")
        try:
            rules = services.repo_rules(repo).for_plan(plan).rules
            knob_path = rules.knob_path
            found = services.github(repo).read_text(knob_path, services.settings.base_branch)
            if found is None:
                return Reply(f"`{knob_path}` does not exist on main of {repo}.")
            knob = parse_knob(found[0], knob_path, rules.knob_field)
        except (KnobError, RepoRulesError) as error:
            return Reply(f":warning: {error}")
        except GitHubError as error:
            return Reply(f":warning: I could not read the knob: {services.redact(str(error))}. Try again shortly.")
        run = services.store.latest(repo, knob.next_track, rules.plan)
        if run is None or run.pr_number is None:
            return Reply(f"Track {knob.next_track} has no PR from trackbot yet; `/track run` first.")
        if run.state is RunState.PR_OPEN:
            # The webhook may have been missed: ask GitHub.
            try:
                merged = services.github(repo).get_pull(run.pr_number).merged
            except GitHubError as error:
                return Reply(f":warning: I could not check PR #{run.pr_number}: {services.redact(str(error))}.")
            if not merged:
                return Reply(f"PR #{run.pr_number} of track {run.track} is not merged yet: {run.pr_url}")
            run.state = RunState.MERGED
            services.store.save(run)
        if run.state not in (RunState.MERGED, RunState.DISMISSED):
            return Reply(f"Track {run.track} is {run.state.value}; nothing to advance.")
        refusal = self.refusal(user, run, "/track advance")
        if refusal is not None:
            return refusal
        return self.advance(run, user)

    def advance(self, run: Run, user: str) -> Reply:
        """Compare-and-swap the knob on main from run.track to run.track + 1."""
        services = self.services
        # One approval at a time per run: a double click must not race itself.
        if not services.store.once("advancing", run.id, ttl_s=120):
            return Reply("An approval of this advance is already being handled.")
        try:
            # Re-read under the marker: the click just before this one may have advanced it meanwhile.
            run = services.store.get(run.id) or run
            if run.state is RunState.ADVANCED:
                return Reply(f"Already advanced to {run.advanced_to} by {mention(run.advanced_by or '?')}.")
            if run.state is RunState.ADVANCING:
                return Reply(
                    f"The advance already waits for PR #{run.advance_pr_number} to merge: {run.advance_pr_url}"
                )
            if run.state not in (RunState.MERGED, RunState.DISMISSED):
                return Reply(f"Track {run.track} is not merged ({run.state.value}); nothing to advance.")
            return self._advance(run, user)
        finally:
            services.store.forget("advancing", run.id)

    def _advance(self, run: Run, user: str) -> Reply:
        services = self.services
        github = services.github(run.repo)
        try:
            repo_rules = services.repo_rules(run.repo).for_plan(run.plan)
        except RepoRulesError as error:
            return Reply(f":warning: {error}. Nothing was changed.")
        except GitHubError as error:
            return Reply(f":boom: {services.redact(str(error))}. Nothing was changed; try again.")
        rules, mode = repo_rules.rules, repo_rules.advance_mode
        path, branch = rules.knob_path, services.settings.base_branch
        old, new = run.track, run.track + 1
        for _attempt in range(MAX_ATTEMPTS):
            try:
                found = github.read_text(path, branch)
                if found is None:
                    return Reply(f"`{path}` is gone from {branch}; not advancing.")
                text, sha = found
                knob = parse_knob(text, path, rules.knob_field)
                if knob.next_track == new:
                    self._mark_advanced(run, user, new, note="someone else already advanced it")
                    return Reply(f"NEXT_TRACK is already {new}; nothing to do.")
                if knob.next_track != old:
                    return Reply(f"NEXT_TRACK is now {knob.next_track}, not {old}; not advancing.")
                if mode == "pull_request":
                    return self._advance_by_pull(run, user, github, repo_rules, text, None)
                github.update_file(
                    path,
                    advance_knob_text(text, old, new, path, rules.knob_field),
                    sha,
                    rules.advance_message(old, new),
                    branch,
                )
            except StaleFile:
                continue  # someone changed the knob between read and write: read and check again
            except RuleViolation as violation:
                if mode == "direct":
                    return Reply(
                        f":no_entry: A rule on {branch} refuses trackbot's direct write (GitHub: {violation.reason}). "
                        f'Give trackbot a bypass, or set `[advance] mode = "auto"` in `.trackbot.toml` to advance '
                        "through a pull request. Nothing was changed."
                    )
                return self._advance_by_pull(run, user, github, repo_rules, text, violation.reason)
            except KnobError as error:
                return Reply(f":warning: {error}")
            except GitHubError as error:
                return Reply(f":boom: {services.redact(str(error))}. Nothing was changed; try again.")
            self._mark_advanced(run, user, new)
            return Reply(f"Advanced {knob_name(run)} from {old} to {new}.", ephemeral=True)
        return Reply("The knob kept changing under me; not advancing. Check it and try again.")

    def _advance_by_pull(
        self, run: Run, user: str, github: GitHubRepo, repo_rules: RepoRules, text: str, refused: str | None
    ) -> Reply:
        """The advance as a one-line PR: a branch from main, the knob's one line changed with the
        advance's exact commit message, a PR, and a merge when the repository's rules let trackbot."""
        services = self.services
        rules, base = repo_rules.rules, services.settings.base_branch
        old, new = run.track, run.track + 1
        message = rules.advance_message(old, new)
        head = f"trackbot/next-track-{old}-to-{new}"
        why = (
            f"{base} is protected (GitHub: {refused}), so the advance is its own pull request"
            if refused
            else "this repository advances through a pull request (`[advance] mode`)"
        )
        try:
            on_head = github.read_text(rules.knob_path, head)
            if on_head is None:  # a PR of an earlier attempt keeps its branch; else start one from main
                github.create_branch(head, github.branch_sha(base))
                on_head = github.read_text(rules.knob_path, head)
            if on_head is None:
                return Reply(f"`{rules.knob_path}` is missing on {head}; not advancing.")
            if parse_knob(on_head[0], rules.knob_path, rules.knob_field).next_track == old:
                changed = advance_knob_text(on_head[0], old, new, rules.knob_path, rules.knob_field)
                github.update_file(rules.knob_path, changed, on_head[1], message, head)
            pull = github.find_open_pull(head, base) or github.open_pull(
                head,
                base,
                message,
                f"Advances NEXT_TRACK from {old} to {new} after PR #{run.pr_number} (track {old}) merged; "
                f"approved by a maintainer in Slack. Only `{rules.knob_path}` changes.",
                draft=False,
            )
        except KnobError as error:
            return Reply(f":warning: {error}")
        except GitHubError as error:
            return Reply(f":boom: {services.redact(str(error))}. NEXT_TRACK was not changed; try again.")
        services.store.index_branch(run.repo, head, run.id)
        run.state, run.advance_approved_by = RunState.ADVANCING, user
        run.advance_pr_number, run.advance_pr_url, run.advance_branch = pull.number, pull.url, head
        services.store.save(run)
        audit.record(
            services.redis, "approved", user, run.repo, f"advance {old} → {new} through PR #{pull.number}", run.id
        )
        try:
            github.merge_pull(pull.number, message)
        except GitHubError as error:
            # Reviews or checks required: someone allowed to merges it; the webhook or the poller sees it.
            reason = error.reason if isinstance(error, RuleViolation) else services.redact(str(error))
            self._close_prompt(
                run,
                f":lock: Approved by {mention(user)}; {why}: PR #{pull.number} {pull.url} (`{message}`). "
                f"I cannot merge it myself ({reason}); I will say here when it merges.",
            )
            return Reply(f"The advance waits for PR #{pull.number} to merge: {pull.url}", ephemeral=True)
        self._close_prompt(
            run, f":lock: Approved by {mention(user)}; {why}: PR #{pull.number} {pull.url}, merged by me."
        )
        self.advance_pull_merged(run, None)
        return Reply(f"Advanced NEXT_TRACK from {old} to {new} through PR #{pull.number}.", ephemeral=True)

    def _mark_advanced(self, run: Run, user: str, new: int, note: str = "", merged_by: str | None = None) -> None:
        services = self.services
        through_pull = run.state is RunState.ADVANCING
        run.state, run.advanced_by, run.advanced_to = RunState.ADVANCED, user, new
        services.store.save(run)
        if not through_pull:  # an advance through its PR was recorded as approved when the PR opened
            audit.record(services.redis, "approved", user, run.repo, f"advance {run.track} → {new}", run.id)
        if not note:
            audit.record(services.redis, "knob_advanced", user, run.repo, f"next_track {run.track} → {new}", run.id)
        next_words = self._describe_track(run.repo, new, run.plan)
        if through_pull:
            by = f" by {merged_by}" if merged_by else ""
            text = (
                f":arrow_right: PR #{run.advance_pr_number} merged{by}: {knob_name(run)} is now {new}. "
                f"Next: {next_words}."
            )
            try:
                services.poster.post(run.channel, text, thread_ts=run.thread_ts)
            except SlackError as error:
                log.warning("saying the advance of %s merged: %s", run.id, error)
            return
        extra = f" ({note})" if note else ""
        self._close_prompt(
            run,
            f":arrow_right: {knob_name(run)} advanced from {run.track} to {new} by {mention(user)}{extra}. "
            f"Next: {next_words}.",
        )

    def _describe_track(self, repo: str, number: int, plan: str = "tracks") -> str:
        services = self.services
        github = services.github(repo)
        noun, command = "Track", "/track run" if plan == "tracks" else f"/track run --plan {plan}"
        try:
            rules = services.repo_rules(repo).for_plan(plan).rules
            noun = rules.noun
            found = github.read_text(rules.knob_path, services.settings.base_branch)
            if found is None:
                return f"{noun} {number}"
            knob = parse_knob(found[0], rules.knob_path, rules.knob_field)
            files = GitHubFiles(github, services.settings.base_branch)
            doc = resolve_plan_doc(knob, number, files, rules.doc_template)
        except (GitHubError, KnobError, RepoRulesError):
            return f"{noun} {number}"
        if isinstance(doc, TrackDoc):
            return f"{noun} {number}: {doc.slug} (`{doc.path}`); `{command}` starts it"
        return f"{noun} {number}, which has no doc yet ({doc.message})"

    def _close_prompt(self, run: Run, text: str) -> None:
        """Say the outcome in the thread, and take the buttons off the prompt so nobody clicks again."""
        poster = self.services.poster
        try:
            poster.post(run.channel, text, thread_ts=run.thread_ts)
            if run.prompt_ts is not None:
                closed = f"PR #{run.pr_number} merged. (Answered: see below.)"
                poster.update(run.channel, run.prompt_ts, closed, [section(closed)])
        except SlackError as error:
            log.warning("closing the prompt of %s: %s", run.id, error)
