"""Delivering alerts beyond the inbox: webhook, email, desktop; digests, quiet hours, retries.

The ingester's Watcher records each fired alert in the inbox and hands it here (``put``), then goes
on: delivery happens in this object's own thread, so a dead webhook or a refusing SMTP server never
slows ingest. A failed delivery is retried with backoff (1 s, doubling, at most 5 minutes apart,
for up to a day); a webhook to a non-public address is refused (alerts/webhook.py) and dropped, as
retrying cannot change the address. Routine news (a run finished) is gathered into one digest per
channel and window; alerts and failures go out at once. During quiet hours routine news waits; alerts do not.

Configuration, in the home's ``config.toml`` (or a project's ``runyard.toml``)::

    [notify]
    digest = "10m"                 # window for routine news (default 10m)
    quiet_hours = "22:00-07:00"    # local time; optional
    allow_private = false          # webhooks to loopback/private/link-local addresses (home config only)
    [notify.webhook]
    url = "https://hooks.example.com/T000/B000"
    [notify.email]
    host = "smtp.example.com"   port = 587   from = "runyard@example.com"   to = ["me@example.com"]
    starttls = true   user = "..."   password = "..."
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from runyard import redact
from runyard.alerts.spec import seconds
from runyard.alerts.webhook import AddressRefused, post_json
from runyard.errors import ConfigError

log = logging.getLogger(__name__)
#: Kinds that are routine news, gathered into digests and held in quiet hours.
ROUTINE = frozenset({"finished"})
FIRST_RETRY = 1.0
MAX_RETRY_GAP = 300.0
GIVE_UP_AFTER = 86400.0


@dataclass
class NotifySettings:
    webhook_url: str | None = None
    email: Mapping[str, Any] | None = None
    digest: float = 600.0
    quiet: tuple[int, int] | None = None  # minutes after midnight: start, end
    #: Whether a webhook may go to a loopback, private or link-local address (see alerts/webhook.py).
    #: Only the home's config.toml sets it: a run's project file is written by whoever launches it.
    allow_private: bool = False

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str) -> NotifySettings:
        try:
            webhook = table.get("webhook") or {}
            email = table.get("email")
            quiet = table.get("quiet_hours")
            allow_private = table.get("allow_private", False)
            if not isinstance(allow_private, bool):
                raise ValueError(f"allow_private must be true or false, not {allow_private!r}")
            return cls(webhook_url=webhook.get("url"), email=email,
                       digest=seconds(table.get("digest", "10m"), "digest"),
                       quiet=_quiet_hours(quiet) if quiet else None, allow_private=allow_private)
        except (ValueError, AttributeError, TypeError) as e:
            raise ConfigError(f"{where}: [notify]: {e}") from None


@dataclass(frozen=True)
class Notice:
    """One alert to deliver: what the Watcher recorded."""

    event_id: int
    run: int
    project: str
    kind: str
    message: str
    time: float
    channels: tuple[str, ...]
    rule: str | None = None
    #: The [notify] table the run's project file gave it, if any (else the home's is used).
    settings: NotifySettings | None = None


def sender_of(home_config: Path) -> str:
    """The group of outboxes that delivers what a process with this home fires: a digest of the
    home's ``[notify]`` table, "" without one. An alert is delivered with the settings in force where
    it fired (a teammate's agent with its own ``[notify]`` on the team's database sends what it fired,
    and never the servers' alerts with its own settings); read once, when the process starts."""
    import hashlib
    import json

    from runyard.alerts.rules import load_notify

    try:
        table = load_notify(home_config)
    except (OSError, ConfigError):
        return ""  # unreadable or wrong: no settings to deliver with (the dispatcher says what is wrong)
    if not table:
        return ""
    return hashlib.sha256(json.dumps(table, sort_keys=True, default=str).encode()).hexdigest()[:16]


def for_home(home_config: Path) -> Callable[[Notice], NotifySettings]:
    """NotifySettings for a notice: its run's project file's [notify], else the home config's (re-read
    when the file changes). ``allow_private`` always comes from the home config."""
    cache: dict[str, Any] = {"mtime": None, "settings": NotifySettings()}

    def settings_for(notice: Notice) -> NotifySettings:
        home = home_settings()
        if notice.settings is not None:
            return replace(notice.settings, allow_private=home.allow_private)
        return home

    def home_settings() -> NotifySettings:
        try:
            mtime = home_config.stat().st_mtime
        except OSError:
            return NotifySettings()
        if mtime != cache["mtime"]:
            from runyard.alerts.rules import load_notify

            try:
                table = load_notify(home_config)
                cache["settings"] = NotifySettings.from_table(table, str(home_config)) if table else NotifySettings()
            except ConfigError as e:
                log.error("%s", e)
            cache["mtime"] = mtime
        settings: NotifySettings = cache["settings"]
        return settings

    return settings_for


def _quiet_hours(text: str) -> tuple[int, int]:
    try:
        start, end = (datetime.strptime(part.strip(), "%H:%M") for part in str(text).split("-"))
    except ValueError:
        raise ValueError(f"quiet_hours must look like 22:00-07:00, not {text!r}") from None
    return start.hour * 60 + start.minute, end.hour * 60 + end.minute


def in_quiet_hours(quiet: tuple[int, int] | None, now: float) -> bool:
    if quiet is None:
        return False
    local = time.localtime(now)
    minute = local.tm_hour * 60 + local.tm_min
    start, end = quiet
    return start <= minute < end if start <= end else (minute >= start or minute < end)


def webhook_body(title: str, lines: list[str], notices: list[Notice]) -> dict[str, Any]:
    """JSON that Slack (``text``) and Discord (``content``) both show, with the details for scripts."""
    text = "\n".join([title, *lines])
    return {"text": text, "content": text[:2000], "username": "runyard",
            "runyard": [{"run": n.run, "project": n.project, "kind": n.kind, "message": n.message, "time": n.time,
                         "rule": n.rule, "event": n.event_id} for n in notices]}


def send_webhook(url: str, body: Mapping[str, Any], allow_private: bool = False) -> None:
    status = post_json(url, body, allow_private)
    if 300 <= status < 400:
        raise OSError(f"webhook answered {status} (a redirect; redirects are not followed: give the final URL)")
    if status >= 300:
        raise OSError(f"webhook answered {status}")


def send_email(config: Mapping[str, Any], subject: str, text: str) -> None:
    import smtplib
    from email.message import EmailMessage

    to = config.get("to") or []
    to = [to] if isinstance(to, str) else list(to)
    if not config.get("host") or not to:
        raise OSError("[notify.email] needs host and to")
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = subject, config.get("from", "runyard@localhost"), ", ".join(to)
    message.set_content(text)
    with smtplib.SMTP(str(config["host"]), int(config.get("port", 25)), timeout=10) as smtp:
        if config.get("starttls"):
            smtp.starttls()
        if config.get("user"):
            smtp.login(str(config["user"]), str(config.get("password", "")))
        smtp.send_message(message)


def send_desktop(title: str, text: str) -> None:
    notify = shutil.which("notify-send")
    if notify is None:
        return  # no desktop here: nothing to tell, and nothing to retry
    subprocess.run([notify, "--app-name=runyard", title, text], check=False, timeout=10, capture_output=True)


@dataclass
class _Pending:
    channel: str
    notices: list[Notice]
    due: float
    attempts: int = 0
    first_try: float | None = None


@dataclass
class Dispatcher:
    """Delivers notices in its own thread. ``settings_for(notice)`` gives the channels' settings."""

    settings_for: Callable[[Notice], NotifySettings] = lambda notice: notice.settings or NotifySettings()
    clock: Callable[[], float] = time.time
    #: Delivered messages, for whoever wants to know (tests, the inbox's delivery column).
    on_delivered: Callable[[str, list[Notice]], object] | None = None
    #: Messages refused for good (a webhook to a non-public address), with the reason: never retried.
    on_refused: Callable[[str, list[Notice], str], object] | None = None
    #: Whether this process may deliver now (the outbox's lease); while not, nothing is sent. The
    #: outbox ``clear()``s what waits when another process has taken the lease over.
    holding: Callable[[], bool] | None = None
    senders: dict[str, Callable[[NotifySettings, str, list[str], list[Notice]], None]] = field(default_factory=dict)
    _queue: list[_Pending] = field(default_factory=list)
    _digests: dict[tuple[str, str], _Pending] = field(default_factory=dict)
    #: Taken from the queue by ``deliver_due`` and not yet sent, retried or dropped.
    _sending: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.senders = {**SENDERS, **self.senders}

    def put(self, notice: Notice) -> None:
        """Queue a notice; returns at once."""
        now = self.clock()
        settings = self.settings_for(notice)
        with self._lock:
            for channel in notice.channels:
                if channel not in self.senders:
                    continue
                if notice.kind in ROUTINE:
                    key = (channel, repr(settings.webhook_url if channel == "webhook" else channel))
                    digest = self._digests.get(key)
                    if digest is None:
                        self._digests[key] = _Pending(channel, [notice], now + settings.digest)
                    else:
                        digest.notices.append(notice)
                else:
                    self._queue.append(_Pending(channel, [notice], now))
        self._wake.set()

    def start(self) -> Dispatcher:
        self._thread = threading.Thread(target=self._run, name="runyard-alerts", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            self.deliver_due()

    def deliver_due(self) -> int:
        """Send what is due now; returns how many messages went out."""
        if self.holding is not None and not self.holding():
            return 0  # not ours to send now: kept until the lease is renewed, or dropped if it was lost
        now = self.clock()
        with self._lock:
            for key, digest in list(self._digests.items()):
                if digest.due <= now:
                    self._queue.append(digest)
                    del self._digests[key]
            due = [p for p in self._queue if p.due <= now]
            self._queue = [p for p in self._queue if p.due > now]
            self._sending += len(due)
        sent = 0
        for pending in due:
            try:
                sent += self._deliver(pending, now)
            finally:
                with self._lock:
                    self._sending -= 1
        return sent

    def _deliver(self, pending: _Pending, now: float) -> int:
        """Send one message (1), or hold it, retry it later or drop it (0)."""
        if self.holding is not None and not self.holding():
            self._requeue(pending)
            return 0
        settings = self.settings_for(pending.notices[0])
        if all(n.kind in ROUTINE for n in pending.notices) and in_quiet_hours(settings.quiet, now):
            pending.due = now + 60.0  # held until the quiet hours end
            self._requeue(pending)
            return 0
        title, lines = _text(pending.notices)
        try:
            self.senders[pending.channel](settings, title, lines, pending.notices)
        except AddressRefused as e:  # the same address would be refused again: dropped, not retried
            log.error("%s delivery refused, message dropped: %s", pending.channel, e)
            if self.on_refused is not None:
                self.on_refused(pending.channel, pending.notices, str(e))
            return 0
        except Exception as e:  # noqa: BLE001 - any failure of a channel: retry later
            self._retry(pending, now, e)
            return 0
        if self.on_delivered is not None:
            self.on_delivered(pending.channel, pending.notices)
        return 1

    def _retry(self, pending: _Pending, now: float, error: Exception) -> None:
        pending.first_try = pending.first_try or now
        pending.attempts += 1
        if now - pending.first_try > GIVE_UP_AFTER:
            log.error("giving up on %s after %d attempts: %s", pending.channel, pending.attempts,
                      redact.text(str(error)))
            return
        pending.due = now + min(FIRST_RETRY * 2 ** (pending.attempts - 1), MAX_RETRY_GAP)
        log.warning("%s delivery failed (%s); retrying in %.0f s", pending.channel, redact.text(str(error)),
                    pending.due - now)
        self._requeue(pending)

    def _requeue(self, pending: _Pending) -> None:
        with self._lock:
            self._queue.append(pending)

    def drain(self, timeout: float) -> None:
        """Send what is due, digests included, for up to ``timeout`` seconds (before the process ends;
        what is left stays pending in the store for the next one)."""
        with self._lock:
            for digest in self._digests.values():
                digest.due = 0.0
                self._queue.append(digest)
            self._digests.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.deliver_due()
            with self._lock:
                if not any(p.due <= self.clock() for p in self._queue):
                    return
            time.sleep(0.05)

    def clear(self) -> None:
        """Forget every notice waiting (another process delivers them now)."""
        with self._lock:
            self._queue.clear()
            self._digests.clear()

    def pending(self) -> int:
        """Messages not yet delivered: waiting, and being sent right now."""
        with self._lock:
            return len(self._queue) + len(self._digests) + self._sending


def _text(notices: list[Notice]) -> tuple[str, list[str]]:
    if len(notices) == 1:
        n = notices[0]
        return f"runyard: run {n.run} ({n.project}): {n.kind}", [n.message]
    return f"runyard: {len(notices)} runs finished", [f"run {n.run} ({n.project}): {n.message}" for n in notices]


def _webhook(settings: NotifySettings, title: str, lines: list[str], notices: list[Notice]) -> None:
    if not settings.webhook_url:
        raise OSError("no [notify.webhook] url is configured")
    send_webhook(settings.webhook_url, webhook_body(title, lines, notices), settings.allow_private)


def _email(settings: NotifySettings, title: str, lines: list[str], notices: list[Notice]) -> None:
    if not settings.email:
        raise OSError("no [notify.email] is configured")
    send_email(settings.email, title, "\n".join(lines) + "\n")


def _desktop(settings: NotifySettings, title: str, lines: list[str], notices: list[Notice]) -> None:
    send_desktop(title, "\n".join(lines))


#: How each channel sends: (settings, title, lines, notices).
SENDERS: dict[str, Callable[[NotifySettings, str, list[str], list[Notice]], None]] = {
    "webhook": _webhook, "email": _email, "desktop": _desktop}


def destination(settings: NotifySettings, channel: str) -> str | None:
    """Where ``channel`` would send with these settings, for people to read; None if nowhere."""
    if channel == "webhook":
        # The URL is the webhook's key (Slack, Discord): people see its host only.
        return redact.webhook(settings.webhook_url) if settings.webhook_url else None
    if channel == "email":
        to = (settings.email or {}).get("to") or []
        return ", ".join([to] if isinstance(to, str) else to) or None
    if channel == "desktop":
        return "notify-send" if shutil.which("notify-send") else None
    return None
