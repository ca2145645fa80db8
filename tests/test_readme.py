"""README.md, followed as a newcomer would: every command in its code blocks runs as written.

Each fenced block is split into commands (continuation lines and multi-line quotes
joined, comments dropped) and every command must match one of the rules below, so a
command added to the README without a way to check it fails here too. Where running a
command for real is cheap it runs, in a scratch directory that holds ``.venv`` and
``jobs`` (links to the checkout) and the ``warehouse`` the commands name:

- ``make X``: the target exists and its recipe expands (``make -n``, never rebuilding
  the venv);
- a job (``spark-submit jobs/…`` / ``python jobs/…``) or ``recsys``: ``--help`` through the
  same command prefix, and its arguments as written, every ``[optional …]`` one and each
  ``a|b|c`` choice included, are accepted by the job's own parser (parsed, not run);
- ``recsys generate``, ``jobs/publish.py`` and ``recsys show`` run for real on a small
  staged table; the reading examples of "The recommendations table" (pandas, SQLite,
  Spark; DuckDB when installed) run against it;
- the backfill runs with ``--dry-run`` in a throwaway Airflow home and plans exactly the
  days its comment says; the connection commands run there and give the sink's URL;
- the DAG chain and the layout tree match the DAG and the checkout.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from recsys_core.publish.connection import sql_url_from_connection
from recsys_core.publish.publish import run_publish

from .conftest import ROOT, VENV_BIN
from .test_publish import make_recs, stage

README = ROOT / "README.md"
DS_OLD, DS = "2018-09-29", "2018-09-30"  # the README's examples read the newest ds, 2018-09-30
USER = 42
PLACEHOLDERS = {"URL": "sqlite:///placeholder.db", "FILE": "movies.csv", "DIR": "/nonexistent"}
SPARK_JOBS = ("ingest.py", "features.py", "score_spark.py")


# ---------------------------------------------------------------- reading the README


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    text: str

    def commands(self) -> list[str]:
        """Shell commands: ``\\`` continuations and open quotes joined, comments dropped."""
        commands, pending, continued = [], "", False
        for raw in self.text.splitlines():
            pending = raw if not pending else f"{pending}{raw}" if continued else f"{pending}\n{raw}"
            continued = pending.rstrip().endswith("\\")
            if continued:
                pending = pending.rstrip()[:-1] + " "
                continue
            try:
                tokens = shlex.split(pending, comments=True)
            except ValueError:  # a quote still open: the command goes on
                continue
            if tokens:
                commands.append(strip_comment(pending))
            pending = ""
        assert not pending, f"README.md:{self.line}: unterminated command {pending!r}"
        return commands


def strip_comment(command: str) -> str:
    """The command without its trailing ``# comment`` (outside quotes)."""
    quote = None
    for i, ch in enumerate(command):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or command[i - 1].isspace()):
            return command[:i].rstrip()
    return command.rstrip()


def readme_blocks() -> list[Block]:
    blocks, lines = [], README.read_text().splitlines()
    start, lang, indent = None, "", 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if start is None and stripped.startswith("```"):
            start, lang, indent, body = number, stripped[3:].strip(), len(line) - len(line.lstrip()), []
        elif start is not None and stripped == "```":
            blocks.append(Block(start, lang, "\n".join(body)))
            start = None
        elif start is not None:
            body.append(line[indent:] if line[:indent].strip() == "" else line)
    assert start is None, f"README.md:{start}: unclosed code block"
    return blocks


BLOCKS = readme_blocks()


def shell_commands() -> list[tuple[Block, str]]:
    return [(b, c) for b in BLOCKS if b.lang == "bash" for c in b.commands()]


RULES: dict[str, re.Pattern] = {
    "make": re.compile(r"^make \S+"),
    "backfill": re.compile(r"^\.venv/bin/airflow backfill create "),
    "connection-add": re.compile(r"^\.venv/bin/airflow connections add "),
    "connection-env": re.compile(r"^AIRFLOW_CONN_[A-Z_]+='"),
    "generate": re.compile(r"^\.venv/bin/recsys generate "),
    "job": re.compile(r"^\.venv/bin/(spark-submit .*?|python )jobs/\w+\.py"),
    "show": re.compile(r"^\.venv/bin/recsys show "),
    "evaluate": re.compile(r"^\.venv/bin/recsys evaluate "),
}


def rule_of(command: str) -> str | None:
    return next((name for name, pattern in RULES.items() if pattern.match(command)), None)


def commands_of(rule: str) -> list[str]:
    found = [c for _, c in shell_commands() if rule_of(c) == rule]
    assert found, f"README.md has no {rule} command any more: update tests/test_readme.py"
    return found


def test_every_code_block_and_command_is_checked_here():
    unknown = [f"README.md:{b.line}: {c}" for b, c in shell_commands() if rule_of(c) is None]
    assert not unknown, "commands this test does not know how to check:\n" + "\n".join(unknown)
    handled_langs = {"bash", "python", "sql", ""}
    assert {b.lang for b in BLOCKS} <= handled_langs, {b.lang for b in BLOCKS}
    plain = [b for b in BLOCKS if b.lang == ""]
    assert all(" >> " in b.text or b.text.startswith("dags/") for b in plain), [b.text[:40] for b in plain]


# ---------------------------------------------------------------- arguments as written


def split_options(command: str) -> tuple[list[str], list[str]]:
    """``(required tokens, optional groups)``: top-level ``[ … ]`` groups come out whole."""
    required, groups, depth, current, quote = [], [], 0, "", None
    for ch in command:
        if quote or ch in "'\"":  # brackets inside quotes ('local[*]') are not optional groups
            quote = None if ch == quote else (quote or ch)
        elif ch == "[":
            depth += 1
            if depth == 1:
                required.append(current)
                current = ""
                continue
        elif ch == "]":
            depth -= 1
            if depth == 0:
                groups.append(current)
                current = ""
                continue
        current += ch
    required.append(current)
    return shlex.split(" ".join(required)), groups


def group_choices(group: str) -> list[list[str]]:
    """The argument lists one optional group can be written as (every alternative)."""
    flag, _, value = group.partition(" ")
    if not value:
        return [[flag]]
    values = []
    optional = re.match(r"^\[([^\]]*)\](.*)$", value)
    prefixes = ["", optional.group(1)] if optional else [""]
    rest = optional.group(2) if optional else value
    for prefix in prefixes:
        for alternative in rest.split("|"):
            values.append(PLACEHOLDERS.get(prefix.rstrip("="), prefix.rstrip("=")) + ("=" if prefix else "")
                          + PLACEHOLDERS.get(alternative, alternative))  # fmt: skip
    return [[flag, v] for v in values]


def variants(command: str) -> list[list[str]]:
    """The command as written without its optional groups, then with all of them (each choice)."""
    required, groups = split_options(command)
    choices = [group_choices(g) for g in groups]
    longest = max((len(c) for c in choices), default=0)
    out = [required]
    for i in range(longest):
        out.append(required + [arg for c in choices for arg in c[i % len(c)]])
    return out


PARSE_ONLY = r"""
import argparse, json, runpy, sys

def parse_only(self, args=None, namespace=None):
    parsed = ORIGINAL(self, args, namespace)
    print("PARSED " + json.dumps(vars(parsed), default=str), flush=True)
    raise SystemExit(0)

ORIGINAL = argparse.ArgumentParser.parse_args
argparse.ArgumentParser.parse_args = parse_only
target, argvs = sys.argv[1], json.loads(sys.argv[2])
for argv in argvs:
    sys.argv = [target, *argv]
    try:
        if target.endswith(".py"):
            runpy.run_path(target, run_name="__main__")
        else:
            from recsys_core.cli import main
            sys.exit(main(argv))
    except SystemExit as stop:
        if stop.code not in (0, None):
            print(f"REFUSED {argv}", flush=True)
"""


def parse_as_written(program: str, argvs: list[list[str]]) -> list[dict]:
    """Each argument list through the program's own parser, nothing run after the parse."""
    result = subprocess.run([sys.executable, "-c", PARSE_ONLY, program, json.dumps(argvs)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    parsed = [json.loads(line[7:]) for line in result.stdout.splitlines() if line.startswith("PARSED ")]
    assert result.returncode == 0 and len(parsed) == len(argvs), (program, argvs, result.stdout, result.stderr)
    return parsed


def test_each_job_command_has_help_and_takes_its_arguments_as_written(scratch):
    for command in commands_of("job"):
        tokens = split_options(command)[0]
        script = next(i for i, t in enumerate(tokens) if t.startswith("jobs/"))
        job = tokens[script]
        assert (job.endswith(SPARK_JOBS)) == ("spark-submit" in tokens[0]), f"{job}: Spark jobs go through spark-submit"
        helped = run(tokens[: script + 1] + ["--help"], cwd=scratch, timeout=180)
        assert helped.returncode == 0 and "usage:" in helped.stdout, (command, helped.stdout, helped.stderr)
        argvs = [v[v.index(job) + 1:] for v in variants(command)]
        for parsed in parse_as_written(str(ROOT / job), argvs):
            assert parsed["ds"] == DS and parsed["warehouse"] == "warehouse", parsed
        # every option the README shows is in the job's --help
        for flag in re.findall(r"\[(--[\w-]+)", command):
            assert flag in helped.stdout, (job, flag)


def test_recsys_evaluate_takes_its_arguments_as_written():
    for command in commands_of("evaluate"):
        argvs = [v[1:] for v in variants(command)]
        for parsed in parse_as_written("recsys", argvs):
            assert parsed["seed"] == 42, parsed


# ---------------------------------------------------------------- make targets


def test_every_make_command_in_the_readme_exists():
    written = [c for c in commands_of("make")]
    inline = re.findall(r"`(make [a-z][\w-]*(?: [A-Z_]+=[^`\s]+)*)`", README.read_text())
    assert "make airflow-ui" in written and "make run" in written and "make test" in written
    for command in sorted(set(written + inline)):
        args = shlex.split(command)[1:]
        # -n: print the recipe only; -o: never rebuild the venv whatever the stamp's age
        result = run(["make", "-n", "-o", ".venv/.installed", *args], cwd=ROOT, timeout=60)
        assert result.returncode == 0, (command, result.stdout, result.stderr)


def test_make_airflow_ui_serves_the_url_the_readme_gives_and_puts_the_venv_on_path():
    url = re.search(r"make airflow-ui .*UI on (http://\S+?),", README.read_text()).group(1)
    recipe = run(["make", "-n", "-o", ".venv/.installed", "airflow-ui"], cwd=ROOT, timeout=60).stdout
    assert f"AIRFLOW__API__PORT={url.rsplit(':', 1)[1]}" in recipe, recipe
    standalone = next(line for line in recipe.splitlines() if line.rstrip().endswith("airflow standalone"))
    assert f'PATH="{ROOT / ".venv" / "bin"}:$PATH"' in standalone, standalone
    assert f"scripts/airflow_ui_login.py {url}" in recipe


# ---------------------------------------------------------------- Airflow: backfill and connections


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> dict[str, str]:
    """The environment of a throwaway Airflow home with the DAG serialized into it."""
    home = tmp_path_factory.mktemp("readme-airflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS_"))} | {
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    }  # fmt: skip
    for step in (["db", "migrate"], ["dags", "reserialize"]):
        result = run([str(VENV_BIN / "airflow"), *step], cwd=ROOT, env=env, timeout=300)
        assert result.returncode == 0, (step, result.stdout[-3000:], result.stderr[-3000:])
    return env


def test_the_backfill_command_plans_exactly_the_days_its_comment_names(airflow_home):
    [block] = [b for b in BLOCKS if b.lang == "bash" and any(rule_of(c) == "backfill" for c in b.commands())]
    [command] = commands_of("backfill")
    first, last = re.search(r"processes (\d{4}-\d\d-\d\d) … (\d{4}-\d\d-\d\d)", block.text).groups()
    result = run(shlex.split(command) + ["--dry-run"], cwd=ROOT, env=airflow_home, timeout=300)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    planned = re.findall(r"^\| (\d{4}-\d\d-\d\d) 02:30:00\+00:00 ", result.stdout, re.MULTILINE)
    day, days = dt.date.fromisoformat(first), []
    while day <= dt.date.fromisoformat(last):
        days.append(day.isoformat())
        day += dt.timedelta(days=1)
    assert planned == days, (planned[:3], planned[-3:], len(planned), len(days))


def test_the_connection_commands_give_the_sinks_the_readme_describes(airflow_home):
    for command in commands_of("connection-add"):
        result = run(["bash", "-c", command], cwd=ROOT, env=airflow_home, timeout=120)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        conn_id = shlex.split(command)[3]
        got = run([str(VENV_BIN / "airflow"), "connections", "get", conn_id, "-o", "json"], cwd=ROOT,
                  env=airflow_home, timeout=120)  # fmt: skip
        [conn] = json.loads(got.stdout[got.stdout.index("["):])
        url = sql_url_from_connection(conn_id, conn["conn_type"], conn["host"], conn["port"], conn["login"],
                                      conn["password"], conn["schema"], conn["extra_dejson"])  # fmt: skip
        assert url == f"postgresql://recsys:{'%E2%80%A6'}@db.example:5432/recsys", url
    urls = {}
    for command in commands_of("connection-env"):
        name, value = command.split("=", 1)
        # as the shell sets it: the value the variable holds after the assignment runs
        held = run(["bash", "-c", f"{command}; printf %s \"${name}\""], cwd=ROOT, timeout=30).stdout
        spec = json.loads(held)
        assert spec == json.loads(shlex.split(value)[0])
        if name == "AIRFLOW_CONN_RECSYS_SQL":
            urls[spec["conn_type"]] = sql_url_from_connection("recsys_sql", spec["conn_type"], spec.get("host"),
                                                              spec.get("port"), spec.get("login"), spec.get("password"),
                                                              spec.get("schema"), spec.get("extra"))  # fmt: skip
        else:
            assert name == "AIRFLOW_CONN_SPARK_DEFAULT" and spec["conn_type"] == "spark", command
    assert urls == {"postgres": "postgresql://recsys:%E2%80%A6@db.example:5432/recsys?sslmode=require",
                    "sqlite": "sqlite:////data/recommendations.db"}  # fmt: skip


# ---------------------------------------------------------------- a published table


def run(argv: list[str], cwd: Path, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(env if env is not None else os.environ)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def as_written(command: str, scratch: Path) -> list[str]:
    """The command's tokens, ``/tmp/…`` moved into the scratch directory."""
    return [t.replace("/tmp/", f"{scratch}/tmp/") for t in shlex.split(command)]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A directory laid out like the checkout for the README's relative paths."""
    root = tmp_path_factory.mktemp("readme")
    (root / ".venv").symlink_to(VENV_BIN.parent)
    (root / "jobs").symlink_to(ROOT / "jobs")
    (root / "tmp").mkdir()
    return root


@pytest.fixture(scope="module")
def published(scratch) -> Path:
    """``warehouse`` with two published days, the newest through the README's publish command."""
    wh = scratch / "warehouse"
    stage(wh, DS_OLD, make_recs(n_users=20, n=5, version="old", seed=1))
    run_publish(wh, DS_OLD)
    stage(wh, DS, make_recs(n_users=30, n=6, version="new", seed=2))
    films = wh / "features" / f"ds={DS}" / "films"
    films.mkdir(parents=True)
    recs = pd.read_parquet(wh / "_staging" / "recommendations" / f"ds={DS}")
    titles = pd.DataFrame({"movie_id": sorted(set(recs.movie_id))})
    titles["title"] = [f"Film {m} (1999)" for m in titles.movie_id]
    titles.to_parquet(films / "part-00000.parquet")
    [command] = [c for c in commands_of("job") if "jobs/publish.py" in c]
    result = run(split_options(command)[0], cwd=scratch, timeout=300)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    assert sorted(p.name for p in (wh / "recommendations").iterdir()) == [f"ds={DS_OLD}", f"ds={DS}"]
    return wh


def newest_rows_of_user(wh: Path) -> list[tuple]:
    recs = pd.read_parquet(wh / "recommendations" / f"ds={DS}")
    mine = recs[recs.user_id == USER].sort_values("rank")
    assert len(mine) == 6
    return [(int(r.rank), int(r.movie_id), round(float(r.score), 4), r.source) for r in mine.itertuples()]


def test_recsys_generate_as_written(scratch):
    [command] = commands_of("generate")
    result = run(as_written(command, scratch), cwd=scratch, timeout=300)
    assert result.returncode == 0, (result.stdout, result.stderr)
    out = Path(as_written(command, scratch)[as_written(command, scratch).index("--out") + 1])
    assert {"ratings.csv", "movies.csv"} <= {p.name for p in out.iterdir()}


def test_recsys_show_as_written(scratch, published):
    [command] = commands_of("show")
    for argv in variants(command):
        result = run(argv, cwd=scratch, timeout=120)
        assert result.returncode == 0, (argv, result.stdout, result.stderr)
        assert f"recommendations ds={DS}" in result.stdout
        if "--user" in argv:
            assert f"user {USER} (" in result.stdout and "Film " in result.stdout, result.stdout


def code_blocks(lang: str) -> list[str]:
    section = README.read_text().split("## The recommendations table", 1)[1].split("\n## ", 1)[0]
    return [b.text for b in BLOCKS if b.lang == lang and b.text in section]


def test_the_pandas_example_reads_the_newest_rows_of_user_42(scratch, published, monkeypatch):
    [code] = [c for c in code_blocks("python") if "pandas" in c]
    monkeypatch.chdir(scratch)
    leftover = published / "recommendations" / ".staging-ds=2018-10-01-x"  # what a killed publish leaves
    leftover.mkdir()
    shutil.copy2(published / "recommendations" / f"ds={DS}" / "part-00000.parquet", leftover)
    try:
        names: dict = {}
        exec(compile(code, "README.md (pandas example)", "exec"), names)  # noqa: S102 - the README's own code
    finally:
        shutil.rmtree(leftover)
    recs = names["recs"]
    assert names["latest"] == DS
    assert set(recs.user_id) == {USER} and {str(d) for d in recs.ds} == {DS}
    got = [(int(r.rank), int(r.movie_id), round(float(r.score), 4), r.source)
           for r in recs.sort_values("rank").itertuples()]  # fmt: skip
    assert got == newest_rows_of_user(published)


def sql_statements() -> list[tuple[str, str]]:
    """(engine comment, statement) of the SQL example block."""
    [code] = code_blocks("sql")
    out, engine, current = [], "", []
    for line in code.splitlines():
        if line.startswith("--"):
            engine = line
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            out.append((engine, "\n".join(current)))
            current = []
    assert not current, current
    return out


def test_the_sqlite_example_reads_the_newest_rows_of_user_42(scratch, published):
    [(engine, statement)] = [(e, s) for e, s in sql_statements() if "SQLite" in e]
    database = re.search(r"sqlite3 (\S+)\)", engine).group(1)
    conn = sqlite3.connect(scratch / database)
    try:
        rows = conn.execute(statement).fetchall()
    finally:
        conn.close()
    assert [(r, m, round(s, 4), src) for r, m, s, src in rows] == newest_rows_of_user(published)


def test_the_duckdb_example_reads_the_newest_rows_of_user_42(scratch, published, monkeypatch):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is not a dependency of the project")
    [(_, statement)] = [(e, s) for e, s in sql_statements() if "DuckDB" in e]
    monkeypatch.chdir(scratch)
    rows = duckdb.sql(statement).fetchall()
    assert len(rows) == 6 and {str(r[0]) for r in rows} == {DS}


def test_the_spark_example_reads_user_42_of_every_day(spark, published):
    [code] = [c for c in code_blocks("python") if "spark." in c]
    # the JVM resolves relative paths against its own working directory, not Python's
    expression = code.split("\n", 1)[1].replace('"warehouse/', f'"{published}/')
    frame = eval(expression, {"spark": spark})  # the README's own expression
    rows = frame.collect()
    assert [str(r.ds) for r in rows] == [DS_OLD] * 5 + [DS] * 6
    assert [r.rank for r in rows] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 6] and {r.user_id for r in rows} == {USER}


# ---------------------------------------------------------------- the diagrams


def test_the_dag_chain_names_the_dags_tasks_in_their_order():
    [chain] = [b.text.strip() for b in BLOCKS if b.lang == "" and " >> " in b.text]
    probe = (
        "import importlib.util, json, sys\n"
        "spec = importlib.util.spec_from_file_location('d', sys.argv[1]); m = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(m)\n"
        "dag = m.recommendations_dag\n"
        "print(json.dumps({t.task_id: sorted(t.get_flat_relative_ids(upstream=False)) for t in dag.tasks}))\n"
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS_"))}
    result = subprocess.run([sys.executable, "-c", probe, str(ROOT / "dags" / "movielens_recommendations.py")],
                            env=env, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    downstream = json.loads(result.stdout.strip().splitlines()[-1])
    # a step is a task or "[a | b]" (alternatives); each task follows every task of the step before
    steps = [[t.strip() for t in step.strip("[]").split("|")] for step in chain.split(" >> ")]
    named = {t for step in steps for t in step}
    assert named <= set(downstream), named - set(downstream)
    for before, after in itertools.pairwise(steps):
        for a, b in itertools.product(before, after):
            assert b in downstream[a], f"README: {a} >> {b}, but {b} is not downstream of {a}"


def test_the_layout_tree_names_what_is_in_the_checkout():
    [tree] = [b.text for b in BLOCKS if b.lang == "" and b.text.startswith("dags/")]
    tops = re.findall(r"^([\w.]+/)\s", tree, re.MULTILINE)
    assert tops and all((ROOT / t).is_dir() for t in tops), [t for t in tops if not (ROOT / t).is_dir()]
    for top in tops:
        line = re.search(rf"^{re.escape(top)}(.*(?:\n {{4,}}.*)*)", tree, re.MULTILINE).group(1)
        for name in re.findall(r"\b([\w]+\.(?:py|sh|md|properties))\b", line):
            assert list((ROOT / top).rglob(name)), f"{top}{name} named in README's layout is missing"


def test_the_readme_names_no_file_that_is_gone():
    text = README.read_text()
    for path in sorted(set(re.findall(r"`((?:dags|jobs|recsys_core|tests|bench|scripts|conf|docker)/[\w./-]+)", text))):
        if "…" in path or "*" in path:
            continue
        assert (ROOT / path).exists(), f"README names {path}, which does not exist"
