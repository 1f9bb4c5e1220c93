"""After the merge: the prompt in the run's thread, and the approved advance of NEXT_TRACK.

The advance rewrites only the `next_track` line through the contents API with the file's sha:
a stale sha means someone else changed the knob, so it is re-read and re-checked; it never
advances twice.
"""

from __future__ import annotations

import logging

from bot import audit
from bot.adapters.github import GitHubError, GitHubFiles, StaleFile
from bot.adapters.slack import SlackError
from bot.commands import Reply
from bot.knob import KnobError, advance_knob_text, parse_knob
from bot.plan import TrackDoc, resolve_plan_doc
from bot.render import knob_name, mention, merge_prompt, section
from bot.repo_rules import RepoRulesError
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
            if run.state not in (RunState.MERGED, RunState.DISMISSED):
                return Reply(f"Track {run.track} is not merged ({run.state.value}); nothing to advance.")
            return self._advance(run, user)
        finally:
            services.store.forget("advancing", run.id)

    def _advance(self, run: Run, user: str) -> Reply:
        services = self.services
        github = services.github(run.repo)
        try:
            rules = services.repo_rules(run.repo).for_plan(run.plan).rules
        except RepoRulesError as error:
            return Reply(f":warning: {error}. Nothing was changed.")
        except GitHubError as error:
            return Reply(f":boom: {services.redact(str(error))}. Nothing was changed; try again.")
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
                github.update_file(
                    path,
                    advance_knob_text(text, old, new, path, rules.knob_field),
                    sha,
                    rules.advance_message(old, new),
                    branch,
                )
            except StaleFile:
                continue  # someone changed the knob between read and write: read and check again
            except KnobError as error:
                return Reply(f":warning: {error}")
            except GitHubError as error:
                return Reply(f":boom: {services.redact(str(error))}. Nothing was changed; try again.")
            self._mark_advanced(run, user, new)
            return Reply(f"Advanced {knob_name(run)} from {old} to {new}.", ephemeral=True)
        return Reply("The knob kept changing under me; not advancing. Check it and try again.")

    def _mark_advanced(self, run: Run, user: str, new: int, note: str = "") -> None:
        services = self.services
        run.state, run.advanced_by, run.advanced_to = RunState.ADVANCED, user, new
        services.store.save(run)
        audit.record(services.redis, "approved", user, run.repo, f"advance {run.track} → {new}", run.id)
        if not note:
            audit.record(services.redis, "knob_advanced", user, run.repo, f"next_track {run.track} → {new}", run.id)
        next_words = self._describe_track(run.repo, new, run.plan)
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
