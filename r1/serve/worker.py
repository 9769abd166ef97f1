"""The model in its own process, so that inference and the event loop never share a GIL.

    w = InferenceProcess(loader, cfg, name)  # spawns; the child (`ps`: r1w-<name>) loads and warms the model
    info = w.wait_ready()                    # {"family", "inputs", "runtime", "load_seconds"}; LoadFailed
    results = w.call([task, ...])            # the input kind's run_batch in the child; WorkerDied if it is gone
    w.cancel(task.id)                        # stop a running task (generation) at its next check
    w.problem(stuck_after_s)                 # None, "exited (...)" or "stuck (no heartbeat ...)"
    w.close()

One pipe, one batch in flight: `call` is made from the batcher's single inference thread. Tasks
travel as encoded bytes (smaller than decoded pixels); the child decodes, preprocesses, runs and
post-processes, and sends back JSON-safe records. A second pipe carries cancellations, read by a
child thread; another child thread writes a heartbeat into shared memory, which a stopped or hung
child stops writing (`r1.serve.supervisor` restarts it). The child ignores SIGINT: Ctrl-C reaches
the whole process group, and the server, not the child, decides when to stop (after draining).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import threading
import time

from r1.input_kinds import get_input_kind

log = logging.getLogger(__name__)

START_GRACE_S = 120.0  # the most a child may take to start beating (interpreter start-up, imports)


class LoadFailed(RuntimeError):
    """The child could not load or warm the model (the message says why)."""


class WorkerDied(RuntimeError):
    """The inference process is gone (crashed or killed)."""


def load_and_warm(loader, cfg):
    """-> (predictor, seconds) for `cfg`, warmed at every batch size the server will run and
    checked to answer with finite numbers (NonFiniteOutput: the server stays not ready, with why).
    `warmup_runs` 0 skips both (tests)."""
    t0 = time.perf_counter()
    p = loader(cfg)
    if cfg.warmup_runs > 0:
        p.warmup(cfg.warmup_runs, tuple(sorted({1, cfg.max_batch})))
        check_finite(p, cfg)
    return p, time.perf_counter() - t0


def check_finite(predictor, cfg) -> None:
    """NonFiniteOutput when the model answers a plain input of its kind with NaN/inf (broken weights,
    a preprocessing std of 0); the input kind knows what a plain input is. Text models check their
    logits as they sample (NonFiniteOutput from their own sampler): their warm-up has raised already."""
    get_input_kind(predictor.inputs).check_finite(predictor, cfg)


def run_tasks(predictor, tasks: list, cfg, cancelled=(), emit=None) -> list[tuple]:
    """A batch of tasks through the predictor, by its input kind: one result tuple per task."""
    return get_input_kind(predictor.inputs).run_batch(predictor, tasks, cfg, cancelled, emit)


def describe(predictor, seconds: float) -> dict:
    return {"family": predictor.family, "inputs": predictor.inputs, "runtime": predictor.runtime,
            "load_seconds": seconds}


def _beat(heartbeat, interval: float) -> None:
    while True:
        heartbeat.value = time.monotonic()
        time.sleep(interval)


def _listen_for_cancels(control, cancelled: set) -> None:
    while True:
        try:
            cancelled.add(control.recv())
        except (EOFError, OSError):  # the server went away
            return


def _name_process(name: str) -> None:
    """`ps` / `top` show the worker as r1w-<variant> (Linux; 15 characters at most)."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(f"r1w-{name}"[:15])
    except OSError:
        pass


def _child_main(conn, control, heartbeat, loader, cfg, name: str = "") -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if name:
        _name_process(name)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s inference: %(message)s")
    # the heartbeat starts before anything slow (imports, loading): a stopped process stops beating
    threading.Thread(target=_beat, args=(heartbeat, cfg.heartbeat_s), daemon=True, name="r1-heartbeat").start()
    cancelled: set[int] = set()
    threading.Thread(target=_listen_for_cancels, args=(control, cancelled), daemon=True, name="r1-cancels").start()
    import torch

    torch.set_num_threads(cfg.threads)
    try:
        predictor, seconds = load_and_warm(loader, cfg)
    except BaseException as err:  # reported to the parent, which answers /readyz with it
        conn.send(("failed", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", describe(predictor, seconds)))
    while True:
        try:
            tasks = conn.recv()
        except (EOFError, OSError):  # the server went away
            return
        if tasks is None:
            return
        try:
            conn.send(("ok", run_tasks(predictor, tasks, cfg, cancelled,
                                       emit=lambda task_id, message: conn.send(("piece", (task_id, message))))))
        except Exception as err:
            logging.getLogger(__name__).exception("batch of %d failed", len(tasks))
            conn.send(("error", f"{type(err).__name__}: {err}"))
        cancelled.difference_update(t.id for t in tasks)


PF_EXITING = 0x4  # linux/sched.h: set first thing in do_exit(), long before the process is reaped


def exiting(pid: int | None) -> bool:
    """Whether process `pid` has begun to exit (Linux: the PF_EXITING flag of /proc/<pid>/stat)."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0] in (b"Z", b"X") or bool(int(fields[6]) & PF_EXITING)
    except (OSError, IndexError, ValueError):
        return False


class InferenceProcess:
    """A spawned child running `run_tasks` on batches sent by `call`. `loader` must be picklable
    (a module-level function or an instance of a module-level class). The child writes a heartbeat
    (a monotonic timestamp in shared memory) every `cfg.heartbeat_s`; `problem()` reads it."""

    def __init__(self, loader, cfg, name: str = ""):
        ctx = mp.get_context("spawn")  # fork would copy the server's threads and locks
        self._conn, child = ctx.Pipe()
        self._control, child_control = ctx.Pipe(duplex=False)[::-1]
        self._control_lock = threading.Lock()
        self.heartbeat = ctx.RawValue("d", 0.0)  # 0: no beat yet (the child is still starting)
        self.started = time.monotonic()
        self.proc = ctx.Process(target=_child_main, args=(child, child_control, self.heartbeat, loader, cfg, name),
                                name="r1-inference", daemon=True)
        self.proc.start()
        child.close()
        child_control.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def _died(self) -> WorkerDied:
        self.proc.join(timeout=1)
        return WorkerDied(f"inference process exited (exit code {self.proc.exitcode})")

    def problem(self, stuck_after_s: float) -> str | None:
        """None while the child lives and beats; else what is wrong with it. A child that is exiting (killed:
        a large one takes a second or more to free its memory before the kernel reports it dead) is dead."""
        if not self.proc.is_alive():
            return f"exited (exit code {self.proc.exitcode})"
        if exiting(self.proc.pid):
            return "exiting (killed)"
        beat = self.heartbeat.value
        if beat == 0.0:  # spawning: a new interpreter imports its modules before its first beat
            silent, limit = time.monotonic() - self.started, max(stuck_after_s, START_GRACE_S)
        else:
            silent, limit = time.monotonic() - beat, stuck_after_s
        if silent > limit:
            return f"stuck (no heartbeat for {silent:.1f} s)"
        return None

    def wait_ready(self, stuck_after_s: float | None = None) -> dict:
        """The child's `describe` record once loaded; LoadFailed, or WorkerDied when it exits or (with
        `stuck_after_s`) stops beating first."""
        try:
            while stuck_after_s is not None and not self._conn.poll(0.05):
                problem = self.problem(stuck_after_s)
                if problem:
                    self.kill()
                    raise WorkerDied(f"inference process {problem} while loading")
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if kind == "failed":
            raise LoadFailed(payload)
        return payload

    def call(self, tasks: list, on_piece=None) -> list[tuple]:
        """Run a batch; streamed tasks' pieces reach `on_piece(task_id, message)` as they come."""
        try:
            self._conn.send(tasks)
            kind, payload = self._conn.recv()
            while kind == "piece":
                if on_piece is not None:
                    on_piece(*payload)
                kind, payload = self._conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if kind == "error":
            raise RuntimeError(f"inference failed: {payload}")
        return payload

    def cancel(self, task_id: int) -> None:
        """Stop task `task_id` at its next cancellation check (generation: the next token)."""
        with self._control_lock:
            try:
                self._control.send(task_id)
            except OSError:  # the child is gone: nothing runs
                pass

    def kill(self) -> None:
        """SIGKILL (works on a stopped process too) and reap."""
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)

    def close(self, timeout: float = 10.0) -> None:
        """Ask the child to stop (after the batch it is running); terminate it after `timeout`."""
        if self.proc.is_alive():
            try:
                self._conn.send(None)
            except OSError:
                pass
            self.proc.join(timeout)
        if self.proc.is_alive():
            log.warning("inference process did not stop in %.0fs; terminating", timeout)
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.kill()
        self._conn.close()
        self._control.close()
