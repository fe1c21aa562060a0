"""Work on untrusted audio in a long-lived child process, so one file costs only itself.

A decoder (libsndfile, FFmpeg) that crashes, hangs or exhausts memory on a crafted file
would otherwise take the Spark Python worker with it: the task is retried, the stage fails,
and every rerun meets the same file again. :class:`IsolatedWorker` runs a function (for
extract_features: decode the window, then the mel front end) in one child process per task,
forked from the worker (so it starts in milliseconds with every decoder already loaded),
reused for every file and forked again only after a failure. The child's address space is
capped at ``memory_mib`` above what it maps at the fork (``RLIMIT_AS``), each call has a
deadline, and the child dies with its parent. A crash, a kill, a timeout or a
``MemoryError`` raises :class:`WorkerFailed` for that call alone.

The audio goes to the child as raw bytes over a pipe (``multiprocessing.connection``); the
result (a features row: about 330 KB of float16 mel) comes back pickled.
"""
from __future__ import annotations

import faulthandler
import logging
import os
import signal
from multiprocessing.connection import Connection
from typing import Any, Callable

log = logging.getLogger(__name__)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class WorkerFailed(RuntimeError):
    """The child crashed, was killed, ran past its deadline or out of memory on one call."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class IsolatedWorker:
    """``call(data, *args)`` runs ``fn(data, *args)`` in a long-lived child process with a
    memory cap and a per-call deadline, and returns its (picklable) result.

    The child is forked on the first call and reused; after a failure the next call forks a
    fresh one. Exceptions ``fn`` raises come back as :class:`WorkerFailed` too (``fn`` should
    turn expected failures into results). ``warmup`` runs once in this process before the first
    fork: whatever it loads (lazy imports, JIT-compiled code, caches) every child inherits, instead
    of loading it under the memory cap, again after each restart. Linux (``fork``, ``prctl``,
    ``RLIMIT_AS``).
    """

    def __init__(self, fn: Callable[..., Any], memory_mib: int = 512, timeout_s: float = 60.0,
                 start_timeout_s: float = 60.0, warmup: Callable[[], Any] | None = None) -> None:
        self.fn = fn
        self.warmup = warmup
        self.memory_mib = memory_mib
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.pid: int | None = None
        self.conn_out: Connection | None = None  # to the child
        self.conn_in: Connection | None = None   # from the child
        self.failures = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def _start(self) -> None:
        """Fork the child: it inherits every loaded module (no start-up imports) and ``fn``."""
        if self.warmup is not None:
            self.warmup()
            self.warmup = None

        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller's code
            child_status = 0
            try:
                os.close(to_child_w)
                os.close(from_child_r)
                _child(to_child_r, from_child_w, parent, self.fn, self.memory_mib * 1024 * 1024)
            except BaseException:  # noqa: BLE001 - nothing may escape into the parent's stack
                child_status = 70
            finally:
                os._exit(child_status)
        os.close(to_child_r)
        os.close(from_child_w)
        self.pid = pid
        self.conn_out = Connection(to_child_w, readable=False)
        self.conn_in = Connection(from_child_r, writable=False)
        try:
            if not self.conn_in.poll(self.start_timeout_s):
                raise RuntimeError(f"the worker process did not start within {self.start_timeout_s:g}s")
            ready = self.conn_in.recv()
            if ready.get("error"):
                raise RuntimeError(f"the worker process failed to start: {ready['error']}")
        except (EOFError, OSError):
            code = self._kill()
            raise RuntimeError(f"the worker process failed to start ({_describe_exit(code)})") from None
        except RuntimeError:
            self._kill()
            raise

    def _kill(self) -> int | None:
        """Kill the child (if alive), reap it, close the pipes; its exit code (negative: a signal)."""
        code = None
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status = os.waitpid(self.pid, 0)
            code = os.waitstatus_to_exitcode(status)
        for conn in (self.conn_out, self.conn_in):
            if conn is not None:
                conn.close()
        self.pid = self.conn_out = self.conn_in = None
        return code

    def close(self) -> None:
        """Ask the child to exit, give it a moment, then make sure it has (and reap it)."""
        if self.pid is not None and self.conn_out is not None and self.conn_in is not None:
            try:
                self.conn_out.send(None)
                self.conn_in.poll(5)  # EOF once the child has exited
            except OSError:
                pass
        self._kill()

    def __enter__(self) -> "IsolatedWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- work ----------------------------------------------------------------------------------
    def call(self, data: bytes, *args: Any) -> Any:
        """``fn(data, *args)`` in the child. Raises :class:`WorkerFailed` when the child crashes,
        is killed, gives no answer within ``timeout_s`` (it is then killed), runs out of memory
        or raises; the next call starts a fresh child."""
        if self.pid is None:
            self._start()
        assert self.conn_out is not None and self.conn_in is not None
        try:
            self.conn_out.send(args)
            self.conn_out.send_bytes(data)
            if not self.conn_in.poll(self.timeout_s):
                self._kill()
                self.failures += 1
                raise WorkerFailed(f"no answer within {self.timeout_s:g}s (stopped)")
            status, value = self.conn_in.recv()
        except (EOFError, OSError):
            code = self._kill()
            self.failures += 1
            log.warning("worker process died (%s); starting a new one for the next item", _describe_exit(code))
            raise WorkerFailed(f"process died ({_describe_exit(code)})") from None
        if status != "ok":
            self.failures += 1
            raise WorkerFailed(value)
        return value


def _child(in_fd: int, out_fd: int, parent: int, fn: Callable[..., Any], memory_bytes: int) -> None:
    """The child's loop: cap memory, then answer one call at a time until told to stop."""
    conn_in, conn_out = Connection(in_fd, writable=False), Connection(out_fd, readable=False)
    faulthandler.disable()  # a decoder crash is reported by the parent as one row, not as a dump of this stack
    _die_with_parent(parent)
    try:
        _cap_address_space(memory_bytes)
    except (OSError, ValueError) as exc:
        conn_out.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    conn_out.send({"pid": os.getpid()})
    while True:
        try:
            args = conn_in.recv()
            if args is None:
                return
            data = conn_in.recv_bytes()
        except (EOFError, OSError):  # the parent has gone
            return
        try:
            reply: tuple[str, Any] = ("ok", fn(data, *args))
        except MemoryError:
            reply = ("error", f"ran out of memory ({memory_bytes >> 20} MiB cap)")
        except Exception as exc:  # noqa: BLE001 - any failure is this item's failure
            reply = ("error", f"{type(exc).__name__}: {str(exc)[:300]}")
        del data
        try:
            conn_out.send(reply)
        except MemoryError:
            conn_out.send(("error", f"ran out of memory ({memory_bytes >> 20} MiB cap)"))


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a killed Spark worker leaves no decoder behind)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        try:
            pr_set_pdeathsig = 1
            ctypes.CDLL(name).prctl(pr_set_pdeathsig, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _cap_address_space(extra_bytes: int) -> None:
    """Limit this process's address space to what it maps now plus ``extra_bytes`` (Linux; elsewhere a no-op)."""
    import resource

    try:
        with open("/proc/self/statm") as handle:
            mapped = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))

