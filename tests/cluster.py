"""A real Spark standalone cluster for the tests: one master and one worker on 127.0.0.1.

Both are started from the installed pyspark (``spark-class``), each in its own process
group so that stopping one also stops what it started (the worker's executors). Ports are
chosen free; logs, work dirs and the local dirs live in one temp folder. Nothing reaches
beyond the loopback interface, so it runs on a CI machine without internet (Java 17).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClusterError(RuntimeError):
    """The cluster did not come up; the message carries the tail of its logs."""


class StandaloneCluster:
    """``start()`` a master and one worker (``cores`` cores, ``memory`` for executors); ``stop()`` both.

    ``master_url`` is ``spark://127.0.0.1:PORT`` once started. ``submit_args`` are the
    ``spark-submit`` options that run an application on it with the test's Python on the
    executors. Raises ClusterError (with the logs) when the worker has not registered with
    the master within ``START_TIMEOUT_S``.
    """

    def __init__(self, root: Path, cores: int = 1, memory: str = "1g") -> None:
        self.root, self.cores, self.memory = Path(root), cores, memory
        self.port, self.ui_port, self.worker_ui_port = free_port(), free_port(), free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self.logs, self.work = self.root / "logs", self.root / "work"
        self._procs: list[subprocess.Popen] = []

    def env(self) -> dict[str, str]:
        """The environment of the daemons: loopback only, the test's Python, quiet small JVMs."""
        local = self.root / "local"
        local.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_MASTER_HOST": "127.0.0.1",
            "SPARK_LOCAL_DIRS": str(local),
            "SPARK_LOG_DIR": str(self.logs),
            "SPARK_WORKER_DIR": str(self.work),
            "SPARK_DAEMON_MEMORY": "256m",
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
        }

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (the child keeps it)
        try:
            proc = subprocess.Popen([str(VENV_BIN / "spark-class"), *args], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self.env(), start_new_session=True)  # fmt: skip
        finally:
            log.close()
        self._procs.append(proc)
        return proc

    def state(self) -> dict | None:
        """The master's JSON status (``/json``), or None while it is not answering."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def start(self) -> StandaloneCluster:
        self.work.mkdir(parents=True, exist_ok=True)
        self._spawn("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.port), "--webui-port", str(self.ui_port))  # fmt: skip
        self._wait(lambda s: s is not None, "the master to answer")
        self._spawn("worker", "org.apache.spark.deploy.worker.Worker", self.master_url, "--host", "127.0.0.1",
                    "--cores", str(self.cores), "--memory", self.memory, "--work-dir", str(self.work),
                    "--webui-port", str(self.worker_ui_port))  # fmt: skip
        self._wait(lambda s: s is not None and s.get("aliveworkers", 0) >= 1, "the worker to register")
        return self

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if ready(self.state()):
                return
            dead = [p for p in self._procs if p.poll() is not None]
            if dead:
                raise ClusterError(f"a Spark daemon exited ({dead[0].returncode}) while waiting for {what}\n"
                                   f"{self.log_tail()}")  # fmt: skip
            time.sleep(0.5)
        raise ClusterError(f"timed out after {START_TIMEOUT_S:.0f}s waiting for {what}\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        out = []
        for log in sorted(self.logs.glob("*.log")):
            out.append(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)

    def stop(self) -> None:
        """Stop the worker (and its executors), then the master: SIGTERM to each process
        group, SIGKILL after ``STOP_TIMEOUT_S``. Safe to call twice or after a failed start."""
        for proc in reversed(self._procs):
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT_S)
            _signal_group(proc, signal.SIGKILL)  # whatever the daemon left in its group
        self._procs.clear()

    def submit_args(self) -> list[str]:
        """``spark-submit`` options for an application on this cluster (1 executor core)."""
        return [
            "--master", self.master_url,
            "--conf", "spark.executor.cores=1",
            "--conf", "spark.cores.max=1",
            "--conf", "spark.executor.memory=512m",
            "--conf", f"spark.pyspark.python={sys.executable}",
            "--conf", f"spark.executorEnv.PYSPARK_PYTHON={sys.executable}",
            "--conf", "spark.executorEnv.SPARK_LOCAL_IP=127.0.0.1",
            "--conf", "spark.driver.host=127.0.0.1",
            "--conf", "spark.ui.enabled=false",
        ]  # fmt: skip


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the daemon's pid
    except (ProcessLookupError, PermissionError):
        pass
