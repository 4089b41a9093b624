"""The durable prompt queue and history: one SQLite file that survives restarts and crashes."""
# Standard library only (no torch, no aiohttp), so the server, the worker threads, the command-line
# runner and other worker processes can all share it.
#
# Concurrency: one connection per store object, guarded by a lock, so the aiohttp loop and worker
# threads of one process may call it freely. Several processes may open the same file; every write is
# a `BEGIN IMMEDIATE` transaction, so SQLite serialises them and `claim` never hands out an item twice.
# A process must open its own `PromptStore` (never share one across `fork`).
#
# Ordering follows ComfyUI: pending items run in ascending `number`, ties in insertion order; without
# a number the store assigns an increasing counter (kept in the file, so it keeps rising across
# restarts), and `front=True` uses a negative number smaller than every pending one. History is
# ordered by the moment each item reached a final state, oldest first, like ComfyUI's history dict.
from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PENDING = "pending"
RUNNING = "running"
SUCCESS = "success"
ERROR = "error"
INTERRUPTED = "interrupted"
CANCELLED = "cancelled"
STATUSES = (PENDING, RUNNING, SUCCESS, ERROR, INTERRUPTED, CANCELLED)
FINAL_STATUSES = frozenset({SUCCESS, ERROR, INTERRUPTED, CANCELLED})
FINISH_STATUSES = frozenset({SUCCESS, ERROR, INTERRUPTED})

# What `cancel` found, so the caller knows whether to interrupt the worker.
CANCEL_PENDING = "pending"    # was pending, now cancelled
CANCEL_RUNNING = "running"    # is running: the caller must interrupt it; the worker then finishes it
CANCEL_FINISHED = "finished"  # already in a final state: nothing to do
CANCEL_UNKNOWN = "unknown"    # no such prompt

# ComfyUI's /api/jobs vocabulary.
JOB_PENDING = "pending"
JOB_IN_PROGRESS = "in_progress"
JOB_COMPLETED = "completed"
JOB_FAILED = "failed"
JOB_CANCELLED = "cancelled"
JOB_STATUSES = (JOB_PENDING, JOB_IN_PROGRESS, JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED)
_JOB_STATUS_OF = {PENDING: JOB_PENDING, RUNNING: JOB_IN_PROGRESS, SUCCESS: JOB_COMPLETED,
                  ERROR: JOB_FAILED, INTERRUPTED: JOB_CANCELLED, CANCELLED: JOB_CANCELLED}
JOB_SORT_KEYS = ("created_at", "execution_duration")

# Never written to disk: ComfyUI strips these before history, we strip them before storage.
SENSITIVE_EXTRA_DATA_KEYS = frozenset({"auth_token_comfy_org", "api_key_comfy_org"})

DEFAULT_MAX_HISTORY = 10_000
DEFAULT_BUSY_TIMEOUT = 30.0
# Other processes may add prompts; a waiting worker looks at the file at least this often.
WAIT_POLL_SECONDS = 0.5
TEXT_PREVIEW_MAX_CHARS = 1024

_PREVIEW_MEDIA = frozenset({"images", "video", "audio", "gifs", "3d", "text"})
_THREE_D_SUFFIXES = (".obj", ".fbx", ".gltf", ".glb", ".usdz")
_TEXT_SUFFIXES = (".txt", ".md", ".json")


class PromptStoreError(RuntimeError):
    """The store file cannot be opened or used (not SQLite, corrupt, newer schema, closed)."""


class DuplicatePromptError(PromptStoreError):
    """A prompt_id that is already in the store (the server answers 409)."""


class InvalidPromptIdError(ValueError):
    """A client-given prompt_id that is not a canonical lowercase UUID (the server answers 400)."""


class UnknownPromptError(PromptStoreError, KeyError):
    """No prompt with this id (the server answers 404)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown prompt"


class PromptStateError(PromptStoreError):
    """An operation that the prompt's current status does not allow (finish a pending prompt...)."""


@dataclass(frozen=True)
class QueueItem:
    """One prompt with everything the queue, the history and the job list say about it."""

    prompt_id: str
    number: int | float
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]
    status: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    worker_id: str | None = None
    retries: int = 0
    outputs: dict[str, Any] = field(default_factory=dict)
    messages: list[list[Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    workflow_id: str | None = None
    seq: int = 0
    # Secrets (ComfyUI API tokens) live only in the memory of the process that accepted the prompt.
    sensitive: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def execution_extra_data(self) -> dict[str, Any]:
        """extra_data as the executor needs it: the stored keys plus the in-memory secrets."""
        return {**self.extra_data, **self.sensitive}


def _create_schema_v1(conn: sqlite3.Connection) -> None:
    """Schema version 1: the prompts table and the persistent counters."""
    # `number` has no declared type on purpose: SQLite then keeps ints as ints and floats as floats,
    # and still compares them numerically in ORDER BY.
    conn.execute("""
        CREATE TABLE prompts (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            prompt_id TEXT NOT NULL UNIQUE,
            number NOT NULL,
            prompt TEXT NOT NULL,
            extra_data TEXT NOT NULL,
            outputs_to_execute TEXT NOT NULL,
            workflow_id TEXT,
            status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'success', 'error',
                                                   'interrupted', 'cancelled')),
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            finished_seq INTEGER,
            worker_id TEXT,
            retries INTEGER NOT NULL DEFAULT 0,
            outputs TEXT NOT NULL DEFAULT '{}',
            messages TEXT NOT NULL DEFAULT '[]',
            error TEXT,
            meta TEXT NOT NULL DEFAULT '{}'
        )""")
    conn.execute("CREATE INDEX prompts_by_status ON prompts (status, number, seq)")
    conn.execute("CREATE INDEX prompts_by_finish ON prompts (finished_seq) WHERE finished_seq IS NOT NULL")
    conn.execute("CREATE INDEX prompts_by_created ON prompts (created_at, seq)")
    conn.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    conn.execute("INSERT INTO counters (name, value) VALUES ('number', 0)")


# Migration hook: MIGRATIONS[v] upgrades a file at version v-1 to version v, inside one transaction.
# A new schema version adds an entry here; files are upgraded when opened.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _create_schema_v1}
SCHEMA_VERSION = max(MIGRATIONS)


def validate_prompt_id(value: Any) -> str:
    """Return a client-given prompt_id unchanged if it is a canonical lowercase UUID, else raise."""
    if not isinstance(value, str):
        raise InvalidPromptIdError(f"prompt_id {value!r} is a {type(value).__name__}; "
                                   "it must be a string holding a canonical lowercase UUID")
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        canonical = None
    if canonical != value:
        raise InvalidPromptIdError(f"prompt_id {value!r} is not a canonical lowercase UUID "
                                   "(like 'a1b2c3d4-0000-4000-8000-000000000000')")
    return value


def new_prompt_id() -> str:
    """A fresh prompt id in the same canonical form clients must use."""
    return str(uuid.uuid4())


def split_sensitive(extra_data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split extra_data into what may be stored and the secrets that may not."""
    public = {k: v for k, v in extra_data.items() if k not in SENSITIVE_EXTRA_DATA_KEYS}
    secret = {k: v for k, v in extra_data.items() if k in SENSITIVE_EXTRA_DATA_KEYS}
    return public, secret


def _json_fallback(value: Any) -> Any:
    """Make node output values JSON-able: numpy arrays and scalars, tuples, sets, anything else as str."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


def _dump(value: Any, what: str, *, strict: bool) -> str:
    """Encode a column; strict for what clients sent (reject), lenient for what nodes produced."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                          default=None if strict else _json_fallback)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} cannot be stored: it is not JSON-serialisable ({exc})") from exc


def _now_ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(round(seconds * 1000))


def _check_number(number: Any) -> int | float:
    if isinstance(number, bool) or not isinstance(number, (int, float)) or \
            (isinstance(number, float) and not math.isfinite(number)) or \
            (isinstance(number, int) and not -2**63 <= number < 2**63):
        raise ValueError(f"number {number!r} must be a finite int or float within 64-bit range "
                         "(the queue priority)")
    return number


def _workflow_id_of(extra_data: dict[str, Any]) -> str | None:
    """The UI workflow's id, which /api/jobs filters on (extra_pnginfo.workflow.id)."""
    pnginfo = extra_data.get("extra_pnginfo")
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
    wid = workflow.get("id") if isinstance(workflow, dict) else None
    return None if wid is None else str(wid)


def _event(name: str, prompt_id: str, **data: Any) -> list[Any]:
    return [name, {"prompt_id": prompt_id, "timestamp": _now_ms(time.time()), **data}]


def _interrupted_event(prompt_id: str, reason: str) -> list[Any]:
    """An `execution_interrupted` message in ComfyUI's shape, with our reason added."""
    return _event("execution_interrupted", prompt_id, node_id=None, node_type=None, executed=[],
                  reason=reason)


class PromptStore:
    """The durable queue and history of prompts, in one SQLite file (WAL mode)."""

    def __init__(self, path: str | os.PathLike[str], *, max_history: int = DEFAULT_MAX_HISTORY,
                 synchronous: str = "FULL", busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
                 wait_poll: float = WAIT_POLL_SECONDS) -> None:
        if max_history < 0:
            raise ValueError(f"max_history {max_history!r} must be >= 0")
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous {synchronous!r} must be 'NORMAL' or 'FULL'")
        self.path = Path(path)
        self.max_history = max_history
        self.wait_poll = wait_poll
        self._lock = threading.RLock()
        self._added = threading.Condition(threading.Lock())
        self._sensitive: dict[str, dict[str, Any]] = {}
        self._conn: sqlite3.Connection | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise PromptStoreError(f"prompt store {self.path}: cannot open it as SQLite ({exc})") from exc
        try:
            self.journal_mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
            if self.journal_mode != "wal":
                log.warning("prompt store %s: the file system refused WAL mode, using %s",
                            self.path, self.journal_mode)
            # Durability: in WAL mode a commit appends to the -wal file. NORMAL already survives a
            # kill -9 of this process (the OS holds the written pages), but may lose the last commits
            # on power loss or an OS crash. FULL fsyncs the WAL on every commit, so a prompt whose
            # add() returned is on disk, full stop. Commits are human-rate (a prompt queued, a prompt
            # finished) and cost well under a millisecond here, so FULL is the default.
            conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._migrate(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise PromptStoreError(
                    f"prompt store {self.path}: another process held the file's write lock for more "
                    f"than busy_timeout={busy_timeout}s ({exc})") from exc
            raise PromptStoreError(
                f"prompt store {self.path}: the file is not a usable SQLite database ({exc}); "
                "move it aside to start with an empty queue and history") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    # --- life cycle -------------------------------------------------------------------------

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Create or upgrade the schema to SCHEMA_VERSION, refusing foreign or newer files."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if version > SCHEMA_VERSION:
                raise PromptStoreError(
                    f"prompt store {self.path}: schema version {version} is newer than this diffloom "
                    f"understands ({SCHEMA_VERSION}); use a newer diffloom or another file")
            if version == 0 and tables:
                raise PromptStoreError(
                    f"prompt store {self.path}: the SQLite file holds other tables "
                    f"({', '.join(sorted(tables))}) and is not a diffloom prompt store")
            if version > 0 and not {"prompts", "counters"} <= tables:
                raise PromptStoreError(
                    f"prompt store {self.path}: schema version {version} but tables are missing "
                    f"(found {', '.join(sorted(tables)) or 'none'})")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](conn)
                conn.execute(f"PRAGMA user_version = {target}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close the file; later calls raise PromptStoreError. Safe to call twice."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        with self._added:
            self._added.notify_all()

    @property
    def closed(self) -> bool:
        return self._conn is None

    def __enter__(self) -> PromptStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise PromptStoreError(f"prompt store {self.path} is closed")
        return self._conn

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock up front, so no lost updates)."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise PromptStoreError(f"prompt store {self.path}: {what}: {exc}") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    raise PromptStoreError(f"prompt store {self.path}: {what}: {exc}") from exc
                raise

    @contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        """One read snapshot (a deferred transaction, so several SELECTs agree)."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                raise PromptStoreError(f"prompt store {self.path}: {what}: {exc}") from exc

    def _notify_added(self) -> None:
        with self._added:
            self._added.notify_all()

    def integrity_check(self) -> list[str]:
        """SQLite's own integrity check: ['ok'] for a healthy file."""
        with self._read("integrity check") as conn:
            return [r[0] for r in conn.execute("PRAGMA integrity_check")]

    # --- rows ---------------------------------------------------------------------------------

    def _item(self, row: sqlite3.Row | tuple[Any, ...]) -> QueueItem:
        (seq, prompt_id, number, prompt, extra_data, outputs_to_execute, workflow_id, status,
         created_at, started_at, finished_at, _finished_seq, worker_id, retries, outputs, messages,
         error, meta) = row
        return QueueItem(
            prompt_id=prompt_id, number=number, prompt=json.loads(prompt),
            extra_data=json.loads(extra_data), outputs_to_execute=json.loads(outputs_to_execute),
            status=status, created_at=created_at, started_at=started_at, finished_at=finished_at,
            worker_id=worker_id, retries=retries, outputs=json.loads(outputs),
            messages=json.loads(messages), error=None if error is None else json.loads(error),
            meta=json.loads(meta), workflow_id=workflow_id, seq=seq,
            sensitive=dict(self._sensitive.get(prompt_id, {})))

    _COLUMNS = ("seq, prompt_id, number, prompt, extra_data, outputs_to_execute, workflow_id, status, "
                "created_at, started_at, finished_at, finished_seq, worker_id, retries, outputs, "
                "messages, error, meta")

    def _fetch(self, conn: sqlite3.Connection, prompt_id: str) -> QueueItem | None:
        row = conn.execute(f"SELECT {self._COLUMNS} FROM prompts WHERE prompt_id = ?",
                           (prompt_id,)).fetchone()
        return None if row is None else self._item(row)

    def _require(self, conn: sqlite3.Connection, prompt_id: str, operation: str) -> QueueItem:
        item = self._fetch(conn, prompt_id)
        if item is None:
            raise UnknownPromptError(f"{operation}: no prompt with prompt_id {prompt_id!r} in {self.path}")
        return item

    def _finish_seq(self, conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT COALESCE(MAX(finished_seq), 0) + 1 FROM prompts").fetchone()[0])

    def _trim_history(self, conn: sqlite3.Connection) -> None:
        """Retention: keep only the newest max_history finished items."""
        conn.execute("""
            DELETE FROM prompts WHERE finished_seq IS NOT NULL AND finished_seq <= (
                SELECT finished_seq FROM prompts WHERE finished_seq IS NOT NULL
                ORDER BY finished_seq DESC LIMIT 1 OFFSET ?)""", (self.max_history,))

    # --- queue --------------------------------------------------------------------------------

    def add(self, prompt: dict[str, Any], *, outputs_to_execute: Sequence[str] = (),
            extra_data: dict[str, Any] | None = None, prompt_id: str | None = None,
            number: int | float | None = None, front: bool = False) -> QueueItem:
        """Queue a prompt durably: when this returns, the prompt survives a crash of the process."""
        # Without `number` the next counter value is used; `front=True` (ignored when `number` is
        # given, as in ComfyUI) puts the prompt before every pending one. extra_data gets
        # `create_time` (epoch ms, as ComfyUI's server sets it); its sensitive keys stay in memory.
        if not isinstance(prompt, dict):
            raise ValueError(f"prompt must be a dict of node_id -> node (API format), got "
                             f"{type(prompt).__name__}")
        pid = new_prompt_id() if prompt_id is None else validate_prompt_id(prompt_id)
        if number is not None:
            _check_number(number)
        targets = [str(t) for t in outputs_to_execute]
        created = time.time()
        public, secret = split_sensitive(dict(extra_data or {}))
        public["create_time"] = _now_ms(created)
        prompt_json = _dump(prompt, f"prompt {pid}", strict=True)
        extra_json = _dump(public, f"extra_data of prompt {pid}", strict=True)
        targets_json = _dump(targets, f"outputs_to_execute of prompt {pid}", strict=True)
        try:
            with self._write(f"add prompt {pid}") as conn:
                number, seq = self._insert(conn, pid, number, front, created, public,
                                           (prompt_json, extra_json, targets_json))
                if secret:
                    # before the commit, so a worker thread that claims it at once gets the secrets
                    self._sensitive[pid] = secret
        except BaseException:
            self._sensitive.pop(pid, None)
            raise
        self._notify_added()
        return QueueItem(prompt_id=pid, number=number, prompt=prompt, extra_data=public,
                         outputs_to_execute=targets, status=PENDING, created_at=created,
                         workflow_id=_workflow_id_of(public), seq=seq, sensitive=dict(secret))

    def _insert(self, conn: sqlite3.Connection, pid: str, number: int | float | None, front: bool,
                created: float, public: dict[str, Any], encoded: tuple[str, str, str]
                ) -> tuple[int | float, int]:
        """Insert a pending row with its queue number; return (number, seq)."""
        counter = int(conn.execute("SELECT value FROM counters WHERE name = 'number'").fetchone()[0])
        conn.execute("UPDATE counters SET value = ? WHERE name = 'number'", (counter + 1,))
        if number is None:
            number = counter
            if front:
                lowest = conn.execute(
                    "SELECT MIN(number) FROM prompts WHERE status = 'pending'").fetchone()[0]
                number = -counter if lowest is None else min(-counter, math.floor(lowest) - 1)
        try:
            cur = conn.execute(
                "INSERT INTO prompts (prompt_id, number, prompt, extra_data, outputs_to_execute, "
                "workflow_id, status, created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                (pid, number, *encoded, _workflow_id_of(public), created))
        except sqlite3.IntegrityError as exc:
            existing = conn.execute("SELECT status FROM prompts WHERE prompt_id = ?",
                                    (pid,)).fetchone()
            state = existing[0] if existing else "?"
            raise DuplicatePromptError(
                f"prompt_id {pid!r} is already in the store (status {state}); "
                "a prompt_id can be queued only once") from exc
        return number, int(cur.lastrowid or 0)

    def claim(self, worker_id: str, *, accept: Callable[[QueueItem], bool] | None = None,
              prefer: Callable[[QueueItem], Any] | None = None) -> QueueItem | None:
        """Atomically take the next pending prompt for `worker_id`, mark it running and return it."""
        # `accept(item)` may refuse items (a worker that cannot run them); `prefer(item)` is a sort
        # key (lower first, ties in queue order), e.g. model affinity. Both run inside the write
        # transaction, so they must be quick and must not call the store.
        with self._write(f"claim for worker {worker_id!r}") as conn:
            if accept is None and prefer is None:
                rows = conn.execute(f"SELECT {self._COLUMNS} FROM prompts WHERE status = 'pending' "
                                    "ORDER BY number, seq LIMIT 1").fetchall()
                candidates = [self._item(r) for r in rows]
            else:
                rows = conn.execute(f"SELECT {self._COLUMNS} FROM prompts WHERE status = 'pending' "
                                    "ORDER BY number, seq").fetchall()
                candidates = [self._item(r) for r in rows]
                if accept is not None:
                    candidates = [c for c in candidates if accept(c)]
                if prefer is not None:
                    candidates = sorted(candidates, key=prefer)
            if not candidates:
                return None
            chosen = candidates[0]
            started = time.time()
            conn.execute("UPDATE prompts SET status = 'running', started_at = ?, finished_at = NULL, "
                         "worker_id = ? WHERE prompt_id = ? AND status = 'pending'",
                         (started, worker_id, chosen.prompt_id))
        return replace(chosen, status=RUNNING, started_at=started, finished_at=None, worker_id=worker_id)

    def wait_for_item(self, timeout: float | None = None, *,
                      accept: Callable[[QueueItem], bool] | None = None) -> bool:
        """Block until a pending prompt (one `accept` takes) exists: True; timeout or close: False."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._added:
            while True:
                try:
                    if self._has_pending(accept):
                        return True
                except PromptStoreError:
                    if self.closed:
                        return False
                    raise
                remaining = self.wait_poll if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    return False
                # add() in this process notifies; adds by other processes are seen by the poll.
                self._added.wait(min(remaining, self.wait_poll))

    def _has_pending(self, accept: Callable[[QueueItem], bool] | None) -> bool:
        with self._read("look for pending prompts") as conn:
            if accept is None:
                row = conn.execute("SELECT 1 FROM prompts WHERE status = 'pending' LIMIT 1").fetchone()
                return row is not None
            rows = conn.execute(f"SELECT {self._COLUMNS} FROM prompts WHERE status = 'pending'").fetchall()
            return any(accept(self._item(r)) for r in rows)

    def finish(self, prompt_id: str, status: str, outputs: dict[str, Any] | None = None,
               messages: Sequence[Sequence[Any]] | None = None, error: dict[str, Any] | None = None,
               meta: dict[str, Any] | None = None) -> QueueItem:
        """Record the end of a running prompt (success / error / interrupted); it enters history."""
        # `messages` are appended to the notes already stored (retries); `error` is the
        # execution_error event data; `meta` defaults to one plain entry per output node.
        if status not in FINISH_STATUSES:
            raise ValueError(f"finish status {status!r} for prompt {prompt_id!r} must be one of "
                             f"{', '.join(sorted(FINISH_STATUSES))}")
        outputs = dict(outputs or {})
        if meta is None:
            meta = {str(n): {"node_id": str(n), "display_node": str(n), "parent_node": None,
                             "real_node_id": str(n)} for n in outputs}
        outputs_json = _dump(outputs, f"outputs of prompt {prompt_id}", strict=False)
        meta_json = _dump(meta, f"meta of prompt {prompt_id}", strict=False)
        error_json = None if error is None else _dump(error, f"error of prompt {prompt_id}", strict=False)
        with self._write(f"finish prompt {prompt_id}") as conn:
            item = self._require(conn, prompt_id, "finish")
            if item.status != RUNNING:
                raise PromptStateError(f"finish: prompt {prompt_id!r} is {item.status}, "
                                       "only a running prompt can be finished")
            all_messages = item.messages + [list(m) for m in (messages or [])]
            finished = time.time()
            conn.execute(
                "UPDATE prompts SET status = ?, finished_at = ?, finished_seq = ?, outputs = ?, "
                "messages = ?, error = ?, meta = ? WHERE prompt_id = ?",
                (status, finished, self._finish_seq(conn), outputs_json,
                 _dump(all_messages, f"messages of prompt {prompt_id}", strict=False), error_json,
                 meta_json, prompt_id))
            self._trim_history(conn)
            done = self._fetch(conn, prompt_id)
        self._sensitive.pop(prompt_id, None)
        return replace(done if done is not None else replace(item, status=status, finished_at=finished),
                       sensitive={})

    def requeue(self, prompt_id: str, reason: str) -> QueueItem:
        """Put a running prompt back in the queue (retries + 1, a message says why)."""
        return self._back_to_pending(prompt_id, reason, RUNNING, "requeue")

    def requeue_interrupted(self, prompt_id: str, reason: str = "re-queued by the user") -> QueueItem:
        """Put an interrupted prompt (a crash, an interrupt) back in the queue at its old place."""
        return self._back_to_pending(prompt_id, reason, INTERRUPTED, "requeue_interrupted")

    def _back_to_pending(self, prompt_id: str, reason: str, expected: str, operation: str) -> QueueItem:
        with self._write(f"{operation} prompt {prompt_id}") as conn:
            item = self._require(conn, prompt_id, operation)
            if item.status != expected:
                raise PromptStateError(f"{operation}: prompt {prompt_id!r} is {item.status}, "
                                       f"only a {expected} prompt can be re-queued this way")
            self._set_pending(conn, item, reason)
            again = self._fetch(conn, prompt_id)
        self._notify_added()
        assert again is not None
        return again

    def _set_pending(self, conn: sqlite3.Connection, item: QueueItem, reason: str) -> None:
        retry = item.retries + 1
        note = _event("execution_requeued", item.prompt_id, reason=reason, retry=retry,
                      previous_status=item.status, previous_worker=item.worker_id)
        conn.execute(
            "UPDATE prompts SET status = 'pending', retries = ?, messages = ?, started_at = NULL, "
            "finished_at = NULL, finished_seq = NULL, worker_id = NULL, outputs = '{}', error = NULL, "
            "meta = '{}' WHERE prompt_id = ?",
            (retry, _dump(item.messages + [note], "messages", strict=False), item.prompt_id))

    def delete_pending(self, prompt_ids: Iterable[str]) -> int:
        """Remove these prompts from the queue if they are still pending; return how many were."""
        ids = list(dict.fromkeys(prompt_ids))
        with self._write("delete pending prompts") as conn:
            removed = [pid for pid in ids if conn.execute(
                "DELETE FROM prompts WHERE prompt_id = ? AND status = 'pending'", (pid,)).rowcount]
        for pid in removed:
            self._sensitive.pop(pid, None)
        return len(removed)

    def clear_pending(self) -> int:
        """Remove every pending prompt; return how many."""
        with self._write("clear pending prompts") as conn:
            ids = [r[0] for r in conn.execute("SELECT prompt_id FROM prompts WHERE status = 'pending'")]
            conn.execute("DELETE FROM prompts WHERE status = 'pending'")
        for pid in ids:
            self._sensitive.pop(pid, None)
        return len(ids)

    def cancel(self, prompt_id: str, reason: str = "cancelled before it started") -> str:
        """Cancel a prompt: pending -> cancelled (kept in history); return what was found (CANCEL_*)."""
        # A running prompt is left running and CANCEL_RUNNING is returned: the caller interrupts the
        # worker, which then finishes the prompt as interrupted.
        with self._write(f"cancel prompt {prompt_id}") as conn:
            item = self._fetch(conn, prompt_id)
            if item is None:
                return CANCEL_UNKNOWN
            if item.status == RUNNING:
                return CANCEL_RUNNING
            if item.status != PENDING:
                return CANCEL_FINISHED
            conn.execute(
                "UPDATE prompts SET status = 'cancelled', finished_at = ?, finished_seq = ?, "
                "messages = ? WHERE prompt_id = ?",
                (time.time(), self._finish_seq(conn),
                 _dump(item.messages + [_interrupted_event(prompt_id, reason)], "messages", strict=False),
                 prompt_id))
            self._trim_history(conn)
        self._sensitive.pop(prompt_id, None)
        return CANCEL_PENDING

    def pending(self) -> list[QueueItem]:
        """Pending prompts in the order they will run."""
        with self._read("list pending") as conn:
            return [self._item(r) for r in conn.execute(
                f"SELECT {self._COLUMNS} FROM prompts WHERE status = 'pending' ORDER BY number, seq")]

    def running(self) -> list[QueueItem]:
        """Running prompts, earliest started first."""
        with self._read("list running") as conn:
            return [self._item(r) for r in conn.execute(
                f"SELECT {self._COLUMNS} FROM prompts WHERE status = 'running' ORDER BY started_at, seq")]

    def queue_remaining(self) -> int:
        """Pending plus running, as ComfyUI's exec_info.queue_remaining counts."""
        with self._read("count queue") as conn:
            return int(conn.execute(
                "SELECT COUNT(*) FROM prompts WHERE status IN ('pending', 'running')").fetchone()[0])

    def get(self, prompt_id: str) -> QueueItem | None:
        """The prompt in whatever status it is, or None."""
        with self._read(f"get prompt {prompt_id}") as conn:
            return self._fetch(conn, prompt_id)

    # --- history ------------------------------------------------------------------------------

    def history(self, max_items: int | None = None, offset: int | None = None) -> list[QueueItem]:
        """Finished prompts, oldest first, paged like ComfyUI's GET /history."""
        # offset None or negative with max_items: the last max_items; offset >= 0: skip that many of
        # the oldest, then at most max_items. max_items <= 0 gives nothing.
        if max_items is not None and max_items <= 0:
            return []
        final = "finished_seq IS NOT NULL"
        with self._read("read history") as conn:
            if offset is None or offset < 0:
                if max_items is None:
                    rows = conn.execute(f"SELECT {self._COLUMNS} FROM prompts WHERE {final} "
                                        "ORDER BY finished_seq").fetchall()
                else:
                    rows = conn.execute(f"SELECT {self._COLUMNS} FROM prompts WHERE {final} "
                                        "ORDER BY finished_seq DESC LIMIT ?", (max_items,)).fetchall()
                    rows.reverse()
            else:
                rows = conn.execute(f"SELECT {self._COLUMNS} FROM prompts WHERE {final} "
                                    "ORDER BY finished_seq LIMIT ? OFFSET ?",
                                    (-1 if max_items is None else max_items, offset)).fetchall()
            return [self._item(r) for r in rows]

    def history_item(self, prompt_id: str) -> QueueItem | None:
        """One finished prompt, or None if it is unknown or not finished."""
        item = self.get(prompt_id)
        return item if item is not None and item.status in FINAL_STATUSES else None

    def delete_history(self, prompt_ids: Iterable[str]) -> int:
        """Remove these finished prompts; return how many were removed."""
        ids = list(dict.fromkeys(prompt_ids))
        with self._write("delete history") as conn:
            return sum(conn.execute("DELETE FROM prompts WHERE prompt_id = ? AND finished_seq IS NOT NULL",
                                    (pid,)).rowcount for pid in ids)

    def clear_history(self) -> int:
        """Remove every finished prompt; return how many."""
        with self._write("clear history") as conn:
            return conn.execute("DELETE FROM prompts WHERE finished_seq IS NOT NULL").rowcount

    # --- crash recovery -----------------------------------------------------------------------

    def recover_after_crash(self, *, requeue: bool = True, max_auto_retries: int = 1,
                            workers: Iterable[str] | None = None) -> list[QueueItem]:
        """At start-up, before workers run: prompts left running become pending again or interrupted."""
        # A prompt is re-queued when `requeue` and it has been retried fewer than `max_auto_retries`
        # times (default: once, so nothing accepted is lost); otherwise it is marked interrupted,
        # with a message, for the user to re-queue. `workers` limits recovery to those worker ids
        # (a restarted worker process must not steal prompts that live workers are running).
        # Returns the recovered prompts in their new state.
        only = None if workers is None else set(workers)
        touched: list[str] = []
        with self._write("recover after crash") as conn:
            rows = conn.execute(f"SELECT {self._COLUMNS} FROM prompts WHERE status = 'running' "
                                "ORDER BY started_at, seq").fetchall()
            for item in map(self._item, rows):
                if only is not None and item.worker_id not in only:
                    continue
                reason = (f"the server stopped while worker {item.worker_id!r} was running this "
                          "prompt")
                if requeue and item.retries < max_auto_retries:
                    self._set_pending(conn, item, reason + "; re-queued automatically")
                else:
                    why = (reason + "; not re-queued automatically because it was already retried "
                           f"{item.retries} time(s)" if requeue else reason)
                    conn.execute(
                        "UPDATE prompts SET status = 'interrupted', finished_at = ?, finished_seq = ?, "
                        "messages = ? WHERE prompt_id = ?",
                        (time.time(), self._finish_seq(conn),
                         _dump(item.messages + [_interrupted_event(item.prompt_id, why)], "messages",
                               strict=False), item.prompt_id))
                touched.append(item.prompt_id)
            self._trim_history(conn)
            recovered = [i for i in (self._fetch(conn, pid) for pid in touched) if i is not None]
        if any(i.status == PENDING for i in recovered):
            self._notify_added()
        return recovered

    # --- /api/jobs ----------------------------------------------------------------------------

    def jobs(self, *, status: Iterable[str] | None = None, workflow_id: str | None = None,
             sort_by: str = "created_at", sort_order: str = "desc", limit: int | None = None,
             offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The /api/jobs list: (rendered jobs of this page, total matching before paging)."""
        wanted = list(JOB_STATUSES if status is None else status)
        for s in wanted:
            if s not in JOB_STATUSES:
                raise ValueError(f"job status filter {s!r} must be one of {', '.join(JOB_STATUSES)}")
        if sort_by not in JOB_SORT_KEYS:
            raise ValueError(f"sort_by {sort_by!r} must be one of {', '.join(JOB_SORT_KEYS)}")
        if sort_order not in ("asc", "desc"):
            raise ValueError(f"sort_order {sort_order!r} must be 'asc' or 'desc'")
        if limit is not None and limit < 0:
            raise ValueError(f"limit {limit!r} must be >= 0")
        if offset < 0:
            raise ValueError(f"offset {offset!r} must be >= 0")
        states = sorted({s for s, j in _JOB_STATUS_OF.items() if j in wanted})
        if not states:
            return [], 0
        where = f"status IN ({', '.join('?' * len(states))})"
        params: list[Any] = list(states)
        if workflow_id:
            where += " AND workflow_id = ?"
            params.append(workflow_id)
        direction = "DESC" if sort_order == "desc" else "ASC"
        key = ("created_at" if sort_by == "created_at" else
               "(CASE WHEN started_at IS NOT NULL AND finished_at IS NOT NULL "
               "THEN finished_at - started_at ELSE 0 END)")
        with self._read("list jobs") as conn:
            total = int(conn.execute(f"SELECT COUNT(*) FROM prompts WHERE {where}", params).fetchone()[0])
            rows = conn.execute(
                f"SELECT {self._COLUMNS} FROM prompts WHERE {where} ORDER BY {key} {direction}, "
                f"seq {direction} LIMIT ? OFFSET ?",
                [*params, -1 if limit is None else limit, offset]).fetchall()
            return [to_job(self._item(r)) for r in rows], total


# --- wire renderers -----------------------------------------------------------------------------

def to_queue_entry(item: QueueItem) -> list[Any]:
    """ComfyUI's queue item: [number, prompt_id, prompt, extra_data, outputs_to_execute]."""
    return [item.number, item.prompt_id, item.prompt, item.extra_data, item.outputs_to_execute]


def history_status_str(item: QueueItem) -> str:
    """ComfyUI's status_str: success, or error for every other final state (interrupts included)."""
    return "success" if item.status == SUCCESS else "error"


def to_history_entry(item: QueueItem) -> dict[str, Any]:
    """ComfyUI's history item: prompt, outputs, status {status_str, completed, messages}, meta."""
    if item.status not in FINAL_STATUSES:
        raise ValueError(f"prompt {item.prompt_id!r} is {item.status}; only finished prompts "
                         "have a history entry")
    return {
        "prompt": to_queue_entry(item),
        "outputs": item.outputs,
        "status": {"status_str": history_status_str(item), "completed": item.status == SUCCESS,
                   "messages": item.messages},
        "meta": item.meta,
    }


def _is_previewable(media: str, entry: dict[str, Any]) -> bool:
    if media in _PREVIEW_MEDIA:
        return True
    fmt = str(entry.get("format", ""))
    name = str(entry.get("filename", "")).lower()
    return (fmt.startswith(("video/", "audio/")) or name.endswith(_THREE_D_SUFFIXES)
            or name.endswith(_TEXT_SUFFIXES))


def summarize_outputs(outputs: dict[str, Any]) -> tuple[int, int, dict[str, Any] | None]:
    """(outputs_count, previewable_outputs_count, preview_output) of a prompt's ui outputs."""
    # The preview prefers a saved (type "output") image/video/audio/3d file, then any other
    # previewable file, then a text file, then raw text (cut to TEXT_PREVIEW_MAX_CHARS), as the
    # ComfyUI frontend expects.
    count = previewable = 0
    saved = other = text_file = raw_text = None
    for node_id, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        for media, entries in ui.items():
            if media == "animated" or not isinstance(entries, list):
                continue
            for entry in entries:
                if isinstance(entry, str) and entry.lower().endswith(_THREE_D_SUFFIXES):
                    entry = {"filename": entry, "subfolder": "", "type": "output", "mediaType": "3d"}
                if not isinstance(entry, dict):
                    if media == "text" and raw_text is None and entry is not None:
                        text = entry[0] if isinstance(entry, (list, tuple)) and entry else str(entry)
                        text = str(text)
                        raw_text = {"content": text[:TEXT_PREVIEW_MAX_CHARS], "nodeId": node_id,
                                    "mediaType": "text"}
                        if len(text) > TEXT_PREVIEW_MAX_CHARS:
                            raw_text["truncated"] = True
                    continue
                count += 1
                if not _is_previewable(media, entry):
                    continue
                previewable += 1
                shown = {**entry, "nodeId": node_id, "mediaType": entry.get("mediaType", media)}
                name = str(entry.get("filename", "")).lower()
                if media == "text" or name.endswith(_TEXT_SUFFIXES):
                    text_file = text_file or shown
                elif entry.get("type") == "output":
                    saved = saved or shown
                else:
                    other = other or shown
    return count, previewable, saved or other or text_file or raw_text


def _execution_error(item: QueueItem) -> dict[str, Any] | None:
    if item.status != ERROR:
        return None
    if item.error is not None:
        return item.error
    for name, data in reversed(item.messages):
        if name == "execution_error" and isinstance(data, dict):
            return data
    return None


def job_status(item: QueueItem) -> str:
    """The prompt's status in ComfyUI's /api/jobs vocabulary."""
    return _JOB_STATUS_OF[item.status]


def to_job(item: QueueItem, *, include_outputs: bool = False) -> dict[str, Any]:
    """ComfyUI's /api/jobs item; with include_outputs, the /api/jobs/{id} detail. None fields are left out."""
    count, previewable, preview = summarize_outputs(item.outputs)
    started = item.started_at
    ended = item.finished_at if started is not None else None
    job = {
        "id": item.prompt_id,
        "status": job_status(item),
        "priority": item.number,
        "create_time": item.extra_data.get("create_time", _now_ms(item.created_at)),
        "execution_start_time": _now_ms(started),
        "execution_end_time": _now_ms(ended),
        "execution_error": _execution_error(item),
        "outputs_count": count,
        "previewable_outputs_count": previewable,
        "preview_output": preview,
        "workflow_id": item.workflow_id,
        # diffloom: which worker ran (or runs) the job, and how often a dead worker's run was retried
        "worker_id": item.worker_id,
        "retries": item.retries or None,
    }
    # The frontend's schema marks these optional, not nullable: absent, never null.
    job = {k: v for k, v in job.items() if v is not None}
    if include_outputs:
        job["outputs"] = item.outputs
        if item.status in FINAL_STATUSES:
            job["execution_status"] = {"status_str": history_status_str(item),
                                       "completed": item.status == SUCCESS, "messages": item.messages}
        job["workflow"] = {"prompt": item.prompt, "extra_data": item.extra_data}
    return job
