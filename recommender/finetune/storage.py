"""Where a search's trials live: an Optuna storage from ``--storage URL`` (or ``--search-db FILE``).

- a file path (``--search-db FILE``, or ``--storage`` without ``scheme://``): an Optuna journal
  file, safe for several processes on one machine (it is appended to under a file lock);
- ``postgresql://...``, ``mysql://...`` (any SQLAlchemy URL, ``sqlite:///...`` too): Optuna's
  RDB storage, for workers on several machines;
- ``redis://...``: a journal kept in Redis (needs the ``redis`` package).

Every kind gets heartbeats: while a trial runs, its process records a heartbeat every
``heartbeat_s`` seconds; a trial whose heartbeat is older than ``grace_s`` (a worker killed,
a machine lost) is marked failed and queued again, with the same parameters, up to
``MAX_RETRY`` times (Optuna's ``RetryFailedTrialCallback``). The RDB storage does this itself
(its clock is the database's); for the journal kinds :func:`heartbeat_journal` adds it, with
the clock of the machines that share the journal.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from recommender.errors import UsageError

# A heartbeat every 10 s and 60 s of silence before a trial counts as lost: a fine-tuning epoch
# of a large dataset can hold the GIL in long C++ calls, so the grace is several beats (Optuna
# requires grace > interval).
HEARTBEAT_S = 10
GRACE_S = 60
MAX_RETRY = 3  # a trial that kills its worker every time is given up after 3 retries
HEARTBEAT_ATTR = "nbtl:heartbeat"
RDB_SCHEMES = ("postgresql", "postgres", "mysql", "mariadb", "sqlite", "oracle", "mssql")


def kind_of(location: str | Path) -> str:
    """``"journal"``, ``"rdb"`` or ``"redis"`` for a ``--storage`` value."""
    text = str(location)
    if "://" not in text:
        return "journal"
    scheme = text.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme in ("redis", "rediss"):
        return "redis"
    if scheme in RDB_SCHEMES:
        return "rdb"
    raise UsageError(f"--storage {describe(text)}: unknown kind of storage {scheme!r}.",
                     "Give a file path (a journal), postgresql://USER:PASSWORD@HOST/DB, "
                     "mysql://... or redis://HOST:PORT.")


def describe(location: str | Path | None) -> str | None:
    """``location`` as it may be printed and stored in the JSON: a URL without its password."""
    if location is None:
        return None
    text = str(location)
    if "://" not in text:
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def retry_callback(max_retry: int = MAX_RETRY):
    """Optuna's callback that queues a lost trial again (its name changed in Optuna 4.9)."""
    import warnings

    import optuna
    from optuna import storages

    cls = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) \
        or storages.RetryFailedTrialCallback
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8, and stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(max_retry=max_retry)


def open_storage(location: str | Path | None, *, heartbeat_s: int = HEARTBEAT_S,
                 grace_s: int = GRACE_S, max_retry: int = MAX_RETRY):
    """The Optuna storage at ``location`` (None: in memory, one process).

    Raises
    ------
    UsageError
        A URL of an unknown kind, a database that cannot be reached, a Redis URL without the
        ``redis`` package.
    """
    import optuna

    if location is None:
        return optuna.storages.InMemoryStorage()
    kind = kind_of(location)
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        path = Path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        return heartbeat_journal(JournalFileBackend(str(path)), heartbeat_s, grace_s,
                                retry_callback(max_retry))
    if kind == "redis":
        try:
            from optuna.storages.journal import JournalRedisBackend

            backend = JournalRedisBackend(str(location))
        except ImportError:
            raise UsageError(f"--storage {describe(location)} needs the redis package.",
                             "pip install redis (or use a postgresql:// URL).") from None
        return heartbeat_journal(backend, heartbeat_s, grace_s, retry_callback(max_retry))
    return _rdb(str(location), heartbeat_s, grace_s, max_retry)


def _rdb(url: str, heartbeat_s: int, grace_s: int, max_retry: int):
    import inspect
    import warnings

    import optuna
    from optuna.storages import RDBStorage

    callback = retry_callback(max_retry)
    name = "heartbeat_stale_trial_callback" \
        if "heartbeat_stale_trial_callback" in inspect.signature(RDBStorage).parameters \
        else "failed_trial_callback"
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # heartbeats: "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                                  engine_kwargs={"pool_pre_ping": True}, **{name: callback})
        except ModuleNotFoundError as exc:
            raise UsageError(f"--storage {describe(url)}: the database driver {exc.name!r} is "
                             "not installed.", "pip install 'nbtl[distributed]' (psycopg2 for "
                             "PostgreSQL; pymysql for mysql+pymysql://).") from None
        except Exception as exc:  # sqlalchemy's OperationalError and kin: the server said no
            # Workers started at once on an empty database race to create Optuna's tables:
            # the losers find them made a moment later.
            if attempt < 2 and ("already exists" in str(exc) or "duplicate key" in str(exc)):
                time.sleep(1.0 + attempt)
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"--storage {describe(url)} cannot be opened: {first}",
                             "Check that the database server runs, the database exists "
                             "(createdb) and the user may connect.") from None
    raise AssertionError("unreachable")


def heartbeat_journal(backend, heartbeat_s: int, grace_s: int, stale_callback):
    """An Optuna ``JournalStorage`` on ``backend`` with heartbeats. A heartbeat is a trial
    system attribute (``nbtl:heartbeat``, seconds since the epoch); a running trial is stale
    when the later of its heartbeat and its start is more than ``grace_s`` old."""
    return _heartbeat_journal_class()(backend, heartbeat_s, grace_s, stale_callback)


@functools.cache
def _heartbeat_journal_class():
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class _HeartbeatJournal(JournalStorage, BaseHeartbeat):
        def __init__(self, backend, heartbeat_s: int, grace_s: int, stale_callback) -> None:
            super().__init__(backend)
            self._heartbeat_s, self._grace_s = heartbeat_s, grace_s
            self._stale_callback = stale_callback

        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.time()
            stale = []
            for trial in self.get_all_trials(study_id, deepcopy=False,
                                             states=(TrialState.RUNNING,)):
                start = trial.datetime_start.timestamp() if trial.datetime_start else now
                last = max(start, float(trial.system_attrs.get(HEARTBEAT_ATTR, start)))
                if now - last > self._grace_s:
                    stale.append(trial._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self._heartbeat_s

        def get_heartbeat_stale_trial_callback(self):
            return self._stale_callback

        def get_failed_trial_callback(self):  # the name before Optuna 4.9
            return self._stale_callback

    _HeartbeatJournal.__name__ = _HeartbeatJournal.__qualname__ = "HeartbeatJournal"
    return _HeartbeatJournal
