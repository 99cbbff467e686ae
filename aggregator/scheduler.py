"""The daemon: one APScheduler job per feed, debounced renders, the daily digest, signals.

`aggregator run` starts here. Each feed is polled on its own interval (with jitter),
resuming the schedule kept in the database after a restart; a poll that stored
something asks for a render, which runs at most once per debounce period and never
concurrently with itself. At `digest.time` the day's digest is finalized, and a run
missed while the daemon was down is made up at start. With an `email:` section, the
previous day's digest is mailed at `email.time`; a failed send is logged, retried with
backoff and never stops the daemon, and the database remembers what was sent, so a
restart sends no day twice. SIGINT/SIGTERM stop it cleanly, SIGHUP re-reads
feeds.yaml, and a lock file keeps a second daemon off the same database.

Logging: warnings and errors always; at INFO (the default) the start, the daily digest,
the email and the stop; each poll and render at -v (the `update`/`render` loggers).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from aggregator.config import Settings, load_settings
from aggregator.digest_text import day_digest
from aggregator.errors import AggregatorError, ConfigError, DaemonError
from aggregator.mailer import (
    EMPTY,
    GAVE_UP,
    SENT,
    EmailState,
    SentDigest,
    after_failure,
    daily_message_id,
    deliver,
    email_day_due,
    next_email_at,
    password_for,
    retry_delay,
)
from aggregator.models import FeedConfig
from aggregator.opml import opml_document
from aggregator.render import render_all
from aggregator.store import Store
from aggregator.update import FeedResult, UpdateSummary, polling, update_feeds_async, utc_now
from aggregator.web import OutputServer

log = logging.getLogger(__name__)
T = TypeVar("T")

SHUTDOWN_GRACE_SECONDS = 5.0
LAST_DIGEST_KEY = "last_digest"
EMAIL_STATE_KEY = "digest_email"
# The email missed while the daemon was down waits this long at most for the feeds due at
# start, so that it carries what was published while the daemon was away.
START_POLLS_WAIT_SECONDS = 120.0
# Feeds due at start are spread over this many seconds at most (the fetcher's limits do the rest).
START_SPREAD_SECONDS = 5.0
# The most entries one poll job groups into stories (or gives their text, after an upgrade).
STORY_SLICE = 5000


class DatabaseLock:
    """An exclusive lock file beside the database, held for the daemon's lifetime.

    flock is released by the kernel when the process dies, so a `kill -9` never
    leaves a stale lock behind; the file keeps the holder's pid for messages and
    for `aggregator reload`.
    """

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.holder_pid()
            raise DaemonError(
                f"another aggregator daemon is already running on {self.database} "
                f"(lock file {self.path} is held{f' by pid {holder}' if holder else ''}); stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder_pid(self) -> int | None:
        """The pid of the running daemon, or None when no daemon holds the lock."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 32).decode(errors="replace").strip()
                return int(text) if text.isdigit() else None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


def send_reload(settings: Settings) -> int:
    """Ask the daemon running on this config's database to re-read feeds.yaml; returns its pid."""
    pid = DatabaseLock(settings.database).holder_pid()
    if pid is None:
        raise DaemonError(f"no aggregator daemon is running on {settings.database}")
    os.kill(pid, signal.SIGHUP)
    return pid


def digest_day_due(now: datetime, timezone: str, digest_time: str, last_digest: date | None) -> date | None:
    """The day whose digest moment has passed but was not yet recorded as done, if any."""
    zone = ZoneInfo(timezone)
    local_now = now.astimezone(zone)
    moment = datetime.combine(local_now.date(), dt_time.fromisoformat(digest_time), tzinfo=zone)
    day = local_now.date() if local_now >= moment else local_now.date() - timedelta(days=1)
    return day if last_digest is None or last_digest < day else None


class Daemon:
    """The long-running process behind `aggregator run`."""

    def __init__(
        self,
        settings: Settings,
        serve_at: tuple[str, int] | None = ("127.0.0.1", 8080),
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.serve_at = serve_at
        self.clock = clock
        self.rng = rng or random.Random()
        self.lock = DatabaseLock(settings.database)
        self._stop = asyncio.Event()
        self._inflight: set[asyncio.Task[object]] = set()
        self._render_lock = asyncio.Lock()
        self._render_wanted = False
        self._stories_behind = True  # entries left in no story by a crash or an older version
        self._render_task: asyncio.Task[None] | None = None
        self._last_render = float("-inf")
        self._render_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")
        self._email_task: asyncio.Task[object] | None = None
        self._due_at_start: set[str] = set()
        self._start_polls_done = asyncio.Event()

    # -- life cycle -----------------------------------------------------------------------

    def run(self, once: bool = False) -> UpdateSummary | None:
        """Run until a signal stops it (or, with `once`, one full cycle); holds the lock throughout."""
        self.lock.acquire()
        try:
            if once:
                return asyncio.run(self._run_once())
            asyncio.run(self._run_forever())
            return None
        finally:
            self.lock.release()
            self._render_pool.shutdown(wait=True)

    async def _run_once(self) -> UpdateSummary:
        self.store = Store(self.settings.database)
        try:
            summary = await update_feeds_async(self.settings, self.store, clock=self.clock)
            await self._render("once")
            self._record_digest(self.clock())
            await self._send_due_email(retry=False)
            return summary
        finally:
            self.store.close()

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._request_stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        server = self._start_server()
        self.store = Store(self.settings.database)
        self.store.sync_feeds(self.settings.feeds)
        self.scheduler = AsyncIOScheduler(
            event_loop=loop,
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        try:
            async with polling(self.settings, self.store, self.clock, feed_count=len(self.settings.feeds)) as poller:
                self.poller = poller
                due = self._schedule_all()
                self._schedule_daily_jobs()
                self.scheduler.start()
                log.info(
                    "daemon started: %d feeds (%d due now, %d resume their stored schedule), database %s, output %s%s",
                    len(self.settings.feeds),
                    due,
                    len(self.settings.feeds) - due,
                    self.settings.database,
                    self.settings.output_dir,
                    f", serving {server.url}" if server else "",
                )
                await self._catch_up_digest()
                self._start_email_after_start_polls()
                self._request_render()
                await self._stop.wait()
                await self._shut_down()
        finally:
            if server is not None:
                server.shutdown()
            self.store.close()
        log.info("daemon stopped")

    def _start_server(self) -> OutputServer | None:
        if self.serve_at is None:
            return None
        self.settings.output_dir.mkdir(parents=True, exist_ok=True)
        server = OutputServer(
            self.settings.output_dir, *self.serve_at, database=self.settings.database, site=self.settings.site
        )
        server.start()
        return server

    def _request_stop(self, signum: int) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self._stop.set()

    async def _shut_down(self) -> None:
        """Stop scheduling, cancel polls in flight (each feed's store is atomic), let a render finish."""
        self.scheduler.shutdown(wait=False)
        for task in list(self._inflight):
            task.cancel()
        if self._email_task is not None:
            # A send in flight ends with the process; unrecorded, it goes again at the next start.
            self._email_task.cancel()
        tasks = (self._render_task, self._email_task)
        pending = [*self._inflight, *(task for task in tasks if task is not None and not task.done())]
        if pending:
            _done, still = await asyncio.wait(pending, timeout=SHUTDOWN_GRACE_SECONDS)
            if still:
                log.warning("%d tasks did not finish within %g s", len(still), SHUTDOWN_GRACE_SECONDS)

    # -- polling --------------------------------------------------------------------------

    def _schedule_all(self) -> int:
        """One job per feed, at its stored next poll or now (spread a little); returns how many are due now."""
        now = self.clock()
        due = 0
        for feed in self.settings.feeds:
            state = self.store.feed_state(feed.name)
            start = state.next_fetch if state.next_fetch and state.next_fetch > now else None
            if start is None:
                start = now + timedelta(seconds=self.rng.uniform(0, min(START_SPREAD_SECONDS, 0.05 * due)))
                due += 1
                self._due_at_start.add(feed.name)
            self._add_feed_job(feed, start)
        if not self._due_at_start:
            self._start_polls_done.set()
        return due

    def _add_feed_job(self, feed: FeedConfig, start: datetime) -> None:
        self.scheduler.add_job(
            self._poll_job,
            IntervalTrigger(seconds=feed.interval_seconds, timezone=UTC),
            args=(feed.name,),
            id=_job_id(feed.name),
            name=f"poll {feed.name}",
            next_run_time=start,
            replace_existing=True,
        )

    async def _poll_job(self, name: str) -> None:
        task = asyncio.current_task()
        if task is None or self._stop.is_set():
            return
        self._inflight.add(task)
        try:
            feed = self.settings.feed(name)
            result = await self.poller.poll(feed, explicit=False)
            self._reschedule(feed, result)
            if result.new or self._stories_behind:
                # Bounded, so a database upgraded from an older version is caught up a slice at a time.
                self._stories_behind = self.poller.assign_stories(limit=STORY_SLICE) >= STORY_SLICE
            if result.new or result.updated:
                self._request_render()
        except KeyError:
            log.debug("feed %s was removed from the config; not polling it", name)
        finally:
            self._inflight.discard(task)
            self._due_at_start.discard(name)
            if not self._due_at_start:
                self._start_polls_done.set()

    def _reschedule(self, feed: FeedConfig, result: FeedResult) -> None:
        """Move the feed's job to the time the poll decided, plus jitter so feeds drift apart.

        A reload during the poll that changed or removed the feed has scheduled it already, by
        its new settings; the poll's time, from the old ones, is then not used.
        """
        if result.next_fetch is None or self._stop.is_set():
            return
        try:
            if self.settings.feed(feed.name) != feed:
                return
        except KeyError:  # removed meanwhile
            return
        jitter = self.rng.uniform(0, min(self.settings.max_jitter_seconds, feed.interval_seconds * 0.1))
        with contextlib.suppress(LookupError):
            self.scheduler.modify_job(_job_id(feed.name), next_run_time=result.next_fetch + timedelta(seconds=jitter))

    # -- rendering and the digest ---------------------------------------------------------

    def _request_render(self) -> None:
        self._render_wanted = True
        if self._render_task is None or self._render_task.done():
            self._render_task = asyncio.create_task(self._render_loop())

    async def _render_loop(self) -> None:
        while self._render_wanted and not self._stop.is_set():
            wait = self._last_render + self.settings.render_debounce_seconds - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=wait)
                if self._stop.is_set():
                    return
            self._render_wanted = False
            await self._render("new entries")

    async def _render(self, reason: str) -> None:
        async with self._render_lock:
            started = time.monotonic()
            try:
                await asyncio.get_running_loop().run_in_executor(self._render_pool, self._render_blocking)
            except (OSError, AggregatorError) as error:
                log.error("render failed (will retry after the next change): %s", _in_words(error))
            else:
                log.debug("rendered (%s) in %d ms", reason, (time.monotonic() - started) * 1000)
            self._last_render = time.monotonic()

    def _render_blocking(self) -> None:
        # Its own connection: sqlite3 connections stay in the thread that made them.
        with Store(self.settings.database, readonly=True) as store:
            opml = opml_document(self.settings.feeds, self.settings.title, store.site_links())
            render_all(store, self.settings.site, self.clock(), opml=opml)

    def _schedule_daily_jobs(self) -> None:
        """The digest at digest.time and, with an email: section, the email at email.time (again on reload)."""
        self._add_daily_job("digest", "daily digest", self.settings.digest_time, self._digest_job)
        email = self.settings.email
        if email is None:
            with contextlib.suppress(LookupError):
                self.scheduler.remove_job("email")
            return
        self._add_daily_job("email", "daily digest email", email.time, self._email_job)
        try:
            password_for(self.settings)
        except ConfigError as error:
            log.warning("the digest email will fail until this is fixed: %s", error)

    def _add_daily_job(self, job_id: str, name: str, at: str, job: Callable[[], object]) -> None:
        hour, minute, second = _clock_parts(at)
        self.scheduler.add_job(
            job,
            CronTrigger(hour=hour, minute=minute, second=second, timezone=ZoneInfo(self.settings.timezone)),
            id=job_id,
            name=name,
            misfire_grace_time=3600,
            replace_existing=True,
        )

    async def _catch_up_digest(self) -> None:
        if self._digest_due() is not None:
            log.debug("the digest of %s was not written yet; writing it now", self._digest_due())
            await self._digest_job()

    def _digest_due(self) -> date | None:
        last = self.store.meta(LAST_DIGEST_KEY)
        return digest_day_due(
            self.clock(), self.settings.timezone, self.settings.digest_time, date.fromisoformat(last) if last else None
        )

    async def _digest_job(self) -> None:
        await self._render("daily digest")
        try:
            self._record_digest(self.clock())
        except AggregatorError as error:
            log.error("could not record the digest as done (it will be written again): %s", error)

    def _record_digest(self, now: datetime) -> None:
        day = digest_day_due(now, self.settings.timezone, self.settings.digest_time, None)
        if day is not None:
            self.store.set_meta(LAST_DIGEST_KEY, day.isoformat())
            log.info("digest of %s finalized", day)

    # -- the digest email -----------------------------------------------------------------

    def _start_email_after_start_polls(self) -> None:
        if self.settings.email is not None:
            self._email_task = asyncio.create_task(self._email_after_start_polls())

    async def _email_after_start_polls(self) -> None:
        """At start: the email missed while the daemon was down, once the feeds due now were polled."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._start_polls_done.wait(), timeout=START_POLLS_WAIT_SECONDS)
        if not await self._send_due_email() and (state := self._email_state()) is not None:
            done = {SENT: "was sent", EMPTY: "had no stories", GAVE_UP: "was given up on"}.get(state.status)
            log.info("the digest email of %s %s; the next goes out %s", state.day, done, self._next_email())

    async def _email_job(self) -> None:
        if self._email_task is None or self._email_task.done():
            self._email_task = asyncio.create_task(self._send_due_email())

    async def _send_due_email(self, retry: bool = True) -> bool:
        """Email the due day's digest, trying again after each failure (unless not `retry`).

        Returns whether a day was due. Never raises: a failure is logged with its reason and
        recorded, and after `email.retries` more tries the day is given up on until the next.
        """
        email = self.settings.email
        attempted = False
        while email is not None and not self._stop.is_set():
            state = self._email_state()
            day = email_day_due(self.clock(), self.settings.timezone, email.time, state)
            if day is None:
                return attempted
            attempted = True
            settings = self.settings
            try:
                sent = await _in_daemon_thread(functools.partial(self._email_blocking, settings, day))
            except Exception as error:
                if not isinstance(error, AggregatorError):
                    log.exception("internal error while sending the digest email of %s", day)
                state = after_failure(state, day, _in_words(error), email.retries)
                self._save_email_state(state)
                if state.status == GAVE_UP:
                    log.error(
                        "gave up on the digest email of %s after %d tries: %s; the next goes out %s",
                        day,
                        state.attempts,
                        state.error,
                        self._next_email(),
                    )
                    return attempted
                delay = retry_delay(email, state.attempts)
                log.warning(
                    "the digest email of %s failed (try %d of %d): %s; trying again in %s",
                    day,
                    state.attempts,
                    email.retries + 1,
                    state.error,
                    _duration(delay) if retry else "the next run",
                )
                if not retry or await self._stopped_within(delay):
                    return attempted
                continue
            self._save_email_state(EmailState(day, SENT if sent else EMPTY))
            if sent is None:
                log.info("no stories on %s: no digest email sent", day)
            else:
                log.info(
                    "sent the digest email of %s (%d stories) to %s%s",
                    day,
                    sent.stories,
                    ", ".join(sent.recipients),
                    f"; the server refused {', '.join(sent.refused)}" if sent.refused else "",
                )
        return attempted

    def _email_blocking(self, settings: Settings, day: date) -> SentDigest | None:
        """Build and send one day's email (None: the day had no stories); runs in a thread of its own."""
        with Store(settings.database, readonly=True) as store:
            digest = day_digest(store, settings.site, day)
        if digest.story_count == 0:
            return None
        return deliver(settings, digest, self.clock(), message_id=daily_message_id(settings, digest.day))

    def _next_email(self) -> str:
        email = self.settings.email
        if email is None:
            return "never (no email: section)"
        return f"at {next_email_at(self.clock(), self.settings.timezone, email.time):%Y-%m-%d %H:%M %Z}"

    def _email_state(self) -> EmailState | None:
        try:
            return EmailState.from_json(self.store.meta(EMAIL_STATE_KEY))
        except AggregatorError as error:
            log.error("could not read the digest email's state: %s", error)
            return None

    def _save_email_state(self, state: EmailState) -> None:
        try:
            self.store.set_meta(EMAIL_STATE_KEY, state.to_json())
        except AggregatorError as error:
            log.error("could not record the digest email of %s as %s: %s", state.day, state.status, error)

    async def _stopped_within(self, seconds: float) -> bool:
        """Wait `seconds`, or less if the daemon is stopped meanwhile; returns whether it was."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        return self._stop.is_set()

    # -- reload ---------------------------------------------------------------------------

    def _reload(self) -> None:
        """Re-read feeds.yaml; a broken file is reported and the running config kept."""
        try:
            fresh = load_settings(self.settings.path)
        except ConfigError as error:
            log.error("reload rejected, keeping the running config: %s", error)
            return
        old = {feed.name: feed for feed in self.settings.feeds}
        new = {feed.name: feed for feed in fresh.feeds}
        self.settings = fresh
        self.store.sync_feeds(fresh.feeds)
        self.poller.reconfigure(fresh)
        self._schedule_daily_jobs()
        now = self.clock()
        for name in old.keys() - new.keys():
            with contextlib.suppress(LookupError):
                self.scheduler.remove_job(_job_id(name))
        for name, feed in new.items():
            if name not in old:
                self._add_feed_job(feed, now)
            elif feed != old[name]:
                state = self.store.feed_state(name)
                last = state.last_fetched or now
                self._add_feed_job(feed, max(now, last + timedelta(seconds=feed.interval_seconds)))
        log.info(
            "config reloaded: %d feeds (%d added, %d removed)",
            len(new),
            len(new.keys() - old.keys()),
            len(old.keys() - new.keys()),
        )


def _job_id(name: str) -> str:
    return f"feed:{name}"


async def _in_daemon_thread(function: Callable[[], T]) -> T:
    """Run a blocking call off the event loop, in a daemon thread.

    Unlike an executor's thread, it never holds up the process's exit: a hung SMTP
    server cannot keep a stopped daemon alive (what it was doing is simply done again).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], object]) -> None:
        if not future.done():  # else it was cancelled meanwhile
            outcome()

    def target() -> None:
        outcome: Callable[[], object]
        try:
            outcome = functools.partial(future.set_result, function())
        except BaseException as error:
            outcome = functools.partial(future.set_exception, error)
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=target, name="mail", daemon=True).start()
    return await future


def _in_words(error: BaseException) -> str:
    """An error as an operator reads it: our own message, or what the OS said about which file."""
    if isinstance(error, AggregatorError) or not isinstance(error, OSError):
        return str(error)
    where = f"cannot write {error.filename}: " if error.filename else ""
    return where + (error.strerror or str(error))


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


def _clock_parts(text: str) -> tuple[int, int, int]:
    moment = dt_time.fromisoformat(text)
    return moment.hour, moment.minute, moment.second
