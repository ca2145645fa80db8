"""The Airflow UI path, for real: ``make airflow-ui`` started as README says, then its REST API
(the one the UI itself calls) and the UI in a headless Chromium.

``make airflow-ui`` runs ``airflow standalone`` (api-server, scheduler, dag-processor,
triggerer) on a free local port with a throwaway Airflow home, from an environment whose
PATH does not hold the venv (standalone starts its components as a plain ``airflow``: the
Makefile has to put the venv's bin/ on PATH). The DAG stays paused (Airflow's default for a
new DAG) and the raw drop points at a missing directory, so the runs and the backfill the
tests create are queued and shown but never execute Spark or torch work.

Every process the test started (make, standalone and its components, the browser) is in a
process group of its own, killed at the end whatever happened. Screenshots are kept in
``$RECSYS_TEST_ARTIFACTS`` (default ``.pytest_cache/artifacts/ui`` in the checkout); the
test output names them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from recsys_core.defaults import RUN_PARAMS

from .cdp import Browser, find_chromium
from .conftest import ROOT, VENV_BIN

pytestmark = pytest.mark.slow

DAG_ID = "movielens_recommendations"
PARAMS = list(RUN_PARAMS)  # the DAG's Params, built from recsys_core.defaults
STARTUP_S = 240  # four Airflow components on a loaded 2-core machine: about a minute
ARTIFACTS = Path(os.environ.get("RECSYS_TEST_ARTIFACTS", ROOT / ".pytest_cache" / "artifacts")) / "ui"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    """The caller's environment without Airflow/recsys settings, make's and the venv on PATH."""
    drop = ("AIRFLOW", "RECSYS_", "MAKE", "MFLAGS", "PYSPARK_", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                                  if p and Path(p).resolve() != VENV_BIN.resolve())  # fmt: skip
    return env


class Standalone:
    """``make airflow-ui`` in its own process group; its output in a file."""

    def __init__(self, home: Path, port: int):
        self.port, self.base = port, f"http://localhost:{port}"
        self.log = home.parent / "make-airflow-ui.log"
        env = clean_env() | {
            # standalone's log servers: free ports, not 8793/8794 (another Airflow may hold them)
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        }  # fmt: skip
        with open(self.log, "wb") as out:
            # -o: never rebuild the venv from here, whatever the stamp's age
            self.process = subprocess.Popen(
                ["make", "--no-print-directory", "-o", ".venv/.installed", "airflow-ui",
                 f"AIRFLOW_HOME_DIR={home}", f"AIRFLOW_PORT={port}",
                 f"WAREHOUSE={home.parent / 'warehouse'}", f"DATA={home.parent / 'no-drop-here'}"],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.pgid = self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def fail(self, message: str):
        tail = "\n".join(self.output().splitlines()[-60:])
        pytest.fail(f"{message}\n--- make airflow-ui output ({self.log}), last lines:\n{tail}")

    def wait_ready(self) -> None:
        """Until the API server answers, every component is healthy and the DAG is parsed."""
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.fail(f"make airflow-ui exited with {self.process.returncode}")
            if "FileNotFoundError" in self.output():  # standalone could not start a component
                self.fail("make airflow-ui could not start Airflow's components")
            try:
                health = self.get("/api/v2/monitor/health", auth=False)
                if all(health[c]["status"] == "healthy" for c in ("metadatabase", "scheduler", "dag_processor")):
                    return
            except (OSError, urllib.error.URLError, KeyError, ValueError):
                pass
            time.sleep(2)
        self.fail(f"the UI was not up and healthy at {self.base} after {STARTUP_S} s")

    def login(self) -> tuple[str, str]:
        """The user and password ``make airflow-ui`` printed, checked by getting a token with them."""
        match = re.search(r"^login: user '([^']+)' \(admin\), password '([^']+)'", self.output(), re.MULTILINE)
        if not match:
            self.fail("make airflow-ui did not print the login (user and password)")
        self.user, self.password = match.groups()
        self.token = self.request("POST", "/auth/token", {"username": self.user, "password": self.password},
                                  auth=False)[1]["access_token"]  # fmt: skip
        return self.user, self.password

    def request(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def get(self, path: str, auth: bool = True) -> dict:
        status, body = self.request("GET", path, auth=auth)
        assert status == 200, (path, status, body)
        return body

    def members(self) -> list[psutil.Process]:
        """The live processes of the process group (zombies waiting for a reaper do not count)."""
        return [p for p in psutil.process_iter(["pid", "status", "cmdline"])
                if _pgid(p.pid) == self.pgid and p.info["status"] != psutil.STATUS_ZOMBIE]  # fmt: skip

    def stop(self) -> list[str]:
        """SIGTERM to the whole process group, SIGKILL what is left after 20 s; what survived."""
        members = self.members
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while members() and time.monotonic() < deadline:
                time.sleep(0.5)
            if not members():
                break
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        return [" ".join(p.info["cmdline"] or []) for p in members()]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-ui") / "home"
    server = Standalone(home, free_port())
    try:
        server.wait_ready()
        server.login()
        deadline = time.monotonic() + 120  # the dag-processor's first parse of dags/
        while not any(d["dag_id"] == DAG_ID for d in server.get("/api/v2/dags")["dags"]):
            if time.monotonic() > deadline:
                server.fail(f"{DAG_ID} was not listed after 120 s")
            time.sleep(2)
        yield server
    finally:
        left = server.stop()
    assert not left, f"processes of make airflow-ui still running after the stop: {left}"


def test_make_airflow_ui_prints_the_url_and_a_working_login(ui):
    out = ui.output()
    assert f"Airflow UI: http://localhost:{ui.port}" in out
    assert "FileNotFoundError" not in out  # standalone's children found `airflow` on PATH
    assert ui.user == "admin" and ui.token
    health = ui.get("/api/v2/monitor/health", auth=False)
    assert {c: health[c]["status"] for c in ("metadatabase", "scheduler", "dag_processor", "triggerer")} == dict.fromkeys(
        ("metadatabase", "scheduler", "dag_processor", "triggerer"), "healthy")  # fmt: skip
    status, _ = ui.request("POST", "/auth/token", {"username": ui.user, "password": ui.password + "x"}, auth=False)
    assert status == 401


def test_the_dag_is_listed_paused_with_its_params_and_without_import_errors(ui):
    assert ui.get("/api/v2/importErrors") == {"import_errors": [], "total_entries": 0}
    dag = ui.get(f"/api/v2/dags/{DAG_ID}/details")
    assert dag["is_paused"] is True  # nothing the tests queue will run
    assert "MovieLens recommendations (nightly)" in dag["doc_md"]
    assert dag["timetable_summary"] == "30 2 * * *"
    assert list(dag["params"]) == PARAMS
    assert dag["params"]["top_n"]["value"] == 100 and dag["params"]["top_n"]["schema"]["type"] == "integer"
    assert all(p["description"] for p in dag["params"].values())
    tasks = [t["task_id"] for t in ui.get(f"/api/v2/dags/{DAG_ID}/tasks")["tasks"]]
    assert {"validate", "ingest", "build_features", "train", "score", "check", "publish", "record_metrics"} <= set(tasks)


def test_a_run_is_triggered_with_params_and_a_bad_param_is_refused(ui):
    path = f"/api/v2/dags/{DAG_ID}/dagRuns"
    for bad in ({"top_n": 10.5}, {"top_n": "x"}, {"top_n": 0}, {"min_model_ratio": "high"}):
        status, body = ui.request("POST", path, {"logical_date": "2018-09-20T02:30:00Z", "conf": bad})
        assert status == 400, (bad, status, body)
        assert "Invalid input for param" in body["detail"], body
    status, run = ui.request("POST", path, {"logical_date": "2018-09-30T02:30:00Z", "conf": {"top_n": 50, "seed": 7},
                                            "note": "from test_ui"})  # fmt: skip
    assert status == 200, run
    assert run["state"] == "queued" and run["run_type"] == "manual" and run["conf"] == {"top_n": 50, "seed": 7}
    # the nightly run that processes ds=2018-09-30: interval [09-29 02:30, 09-30 02:30)
    assert (run["data_interval_start"], run["data_interval_end"]) == ("2018-09-29T02:30:00Z", "2018-09-30T02:30:00Z")
    shown = ui.get(f"{path}/{urllib.parse.quote(run['dag_run_id'])}")
    assert shown["conf"] == {"top_n": 50, "seed": 7} and shown["logical_date"] == "2018-09-30T02:30:00Z"
    assert ui.get(f"{path}?run_type=manual")["total_entries"] == 1  # the refused ones left nothing


def test_a_backfill_over_two_days_is_planned_created_and_shows_its_runs(ui):
    # README: --to-date names the day after the last processed day
    body = {"dag_id": DAG_ID, "from_date": "2018-09-27T00:00:00Z", "to_date": "2018-09-29T00:00:00Z",
            "max_active_runs": 1, "dag_run_conf": {"top_n": 20}}  # fmt: skip
    status, plan = ui.request("POST", "/api/v2/backfills/dry_run", body)
    assert status == 200, plan
    assert [b["logical_date"] for b in plan["backfills"]] == ["2018-09-27T02:30:00Z", "2018-09-28T02:30:00Z"]
    status, refused = ui.request("POST", "/api/v2/backfills", {**body, "dag_run_conf": {"top_n": 10.5}})
    assert status in (400, 422), refused  # the same Param check as a trigger
    status, backfill = ui.request("POST", "/api/v2/backfills", body)
    assert status == 200, backfill
    runs = ui.get(f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=backfill&order_by=logical_date")["dag_runs"]
    assert [(r["logical_date"], r["conf"], r["state"]) for r in runs] == [
        ("2018-09-27T02:30:00Z", {"top_n": 20}, "queued"), ("2018-09-28T02:30:00Z", {"top_n": 20}, "queued")]
    listed = ui.get(f"/api/v2/backfills?dag_id={DAG_ID}")["backfills"]
    assert [b["id"] for b in listed] == [backfill["id"]]


@pytest.fixture
def browser(ui, tmp_path):
    executable = find_chromium()
    if executable is None:
        message = "chromium not found: run scripts/ensure_chromium.sh"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    with Browser(executable, profile=tmp_path / "profile") as b:
        yield b


VISIBLE_DIALOG = "Array.from(document.querySelectorAll('[role=dialog]')).filter(d => d.getClientRects().length)[0]"


def click(browser: Browser, selector: str, what: str) -> None:
    browser.wait_for(f"!!document.querySelector({json.dumps(selector)})", 60, what)
    browser.evaluate(f"document.querySelector({json.dumps(selector)}).click()")


def test_the_ui_shows_the_dag_docs_and_the_trigger_form_with_every_param(ui, browser, tmp_path, request):
    shots: list[Path] = []
    try:
        # logged out: the SPA sends us to the simple auth manager's login page; sign in as a user would
        browser.navigate(f"{ui.base}/dags/{DAG_ID}")
        browser.wait_for("!!document.querySelector('input[name=password]')", 90, "the login form")
        for name, value in (("username", ui.user), ("password", ui.password)):
            browser.evaluate(f"document.querySelector('input[name={name}]').focus()")
            browser.call("Input.insertText", {"text": value})
        click(browser, "button[type=submit]:not([disabled])", "an enabled Sign in button")
        browser.wait_for(f"location.pathname === '/dags/{DAG_ID}'", 60, "the redirect to the DAG page")

        # the DAG page: its tasks and schedule, then its documentation (doc_md)
        browser.wait_for("document.body.innerText.includes('record_metrics') && "
                         "document.body.innerText.includes('30 2 * * *')", 90, "the DAG page")  # fmt: skip
        shots.append(browser.screenshot(tmp_path / "dag-page.png"))
        click(browser, "button[aria-label='Dag Docs']", "the Dag Docs button")
        docs = browser.wait_for(f"{VISIBLE_DIALOG}?.innerText.includes('MovieLens recommendations (nightly)') "
                                f"&& {VISIBLE_DIALOG}.innerText", 30, "the DAG documentation")  # fmt: skip
        for text in ("top-N unseen films for every user", "record_metrics", "recsys_warehouse", "--to-date"):
            assert text in docs, text
        shots.append(browser.screenshot(tmp_path / "dag-docs.png"))
        browser.evaluate(f"{VISIBLE_DIALOG}.querySelector('button[aria-label=Close]').click()")
        browser.wait_for("!document.body.innerText.includes('Dag Documentation')", 30, "the docs to close")

        # the trigger form: every Param with its description and default, and the backfill option
        click(browser, "button[aria-label='Trigger Dag']", "the Trigger button")
        form = browser.wait_for(f"{VISIBLE_DIALOG}?.innerText.includes('sql_conn_id') && {VISIBLE_DIALOG}.innerText",
                                60, "the trigger form with its Run Parameters")  # fmt: skip
        details = ui.get(f"/api/v2/dags/{DAG_ID}/details")["params"]
        lines = [line.strip() for line in form.splitlines() if line.strip()]
        for name in PARAMS:
            assert name in lines, (name, lines)
            assert details[name]["description"] in lines, (name, details[name]["description"], lines)
        assert "Backfill" in lines and "Run Parameters" in lines
        values = browser.evaluate(f"Array.from({VISIBLE_DIALOG}.querySelectorAll('input')).map(i => i.value)")
        assert "100" in values and "recsys_sql" in values, values  # top_n's and sql_conn_id's defaults
        shots.append(browser.screenshot(tmp_path / "trigger-form.png"))
        browser.evaluate(f"{VISIBLE_DIALOG}.querySelector('button[aria-label=Close]').click()")  # never triggered here

        # the backfill the API test created, on the DAG's Backfills tab
        if ui.get(f"/api/v2/backfills?dag_id={DAG_ID}")["total_entries"]:
            browser.navigate(f"{ui.base}/dags/{DAG_ID}/backfills")
            browser.wait_for("document.body.innerText.includes('1 Backfill') && "
                             "document.body.innerText.includes('2018-09-29 00:00:00')", 60, "the Backfills tab")
            shots.append(browser.screenshot(tmp_path / "backfills.png"))
    finally:
        try:
            shots.append(browser.screenshot(tmp_path / "last.png"))
        except Exception as exc:  # noqa: BLE001 - the browser may be the thing that failed
            print(f"no last screenshot: {exc}")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        kept = [shutil.copy2(shot, ARTIFACTS / shot.name) for shot in shots]
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter and capture and kept:  # past the output capture, into the run's own output
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"\ntest_ui screenshots: {' '.join(str(k) for k in kept)}")
