"""docs/operations.md and docs/grafana/vfrec.json hold against the code.

The metrics table names exactly what the roles (protocol/observe.py's registry) and A's service
(party_a/serving/metrics.py's `Metrics`) export. Every metric that a dashboard panel or an alert rule queries is in the
table.
Every systemd unit parses, runs a real role and subcommand that accepts its arguments, and has the sections and
settings its kind needs. So do the cron lines. With `systemd-analyze` installed, the units also pass
`systemd-analyze verify`.
"""

from __future__ import annotations

import configparser
import copy
import functools
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "operations.md"
DASHBOARD = ROOT / "docs" / "grafana" / "vfrec.json"
ROLES = ("party_a", "party_b", "coordinator")
VENV_PYTHON = "/opt/vfrec/.venv/bin/python"  # where the page installs vfrec
# the units the page must show, with the role and subcommand each runs (None: the role's training run)
EXPECTED_UNITS = {
    "vfrec-coordinator.service": ("coordinator", None),
    "vfrec-coordinator-refresh.service": ("coordinator", "refresh"),
    "vfrec-party-a.service": ("party_a", None),
    "vfrec-party-a-serve.service": ("party_a", "serve"),
    "vfrec-party-b.service": ("party_b", None),
    "vfrec-party-b-refresh.service": ("party_b", "refresh"),
    "vfrec-party-b-refresh.timer": None,
}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
# PromQL words that look like names: keywords, and a number's special values
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
                "bool", "inf", "nan"}
# names from outside vfrec that an alert rule may query: Prometheus's own per-target series
PROMETHEUS_SERIES = {"up"}
OPTIONS_WITH_VALUES = {"--config", "--log-format", "--k", "--out"}


def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def fenced(language: str) -> list[str]:
    """The bodies of the page's code blocks fenced as ```<language>."""
    return re.findall(rf"^```{re.escape(language)}[ \t]*\n(.*?)^```[ \t]*$", doc(), re.M | re.S)


def documented() -> dict[str, str]:
    """The metrics table: name -> type (counter, gauge, histogram)."""
    rows = re.findall(r"^\|\s*`(vfrec_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|", doc(), re.M)
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), f"a metric is in the table twice: {sorted(names)}"
    return dict(rows)


# ---- PromQL --------------------------------------------------------------------------------------------------------

def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression queries: no functions, keywords, label names or values, durations or
    Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings (label values)
    expr = re.sub(r"\$\{[^}]*\}|\$\w+", "", expr)  # Grafana's variables
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group()
        if match.start() > 0 and (expr[match.start() - 1].isdigit() or expr[match.start() - 1] == "."):
            continue  # a duration's unit (10m) or an exponent (1e3)
        if word.lower() in PROMQL_WORDS or expr[match.end():].lstrip().startswith("("):
            continue  # a keyword, or a function or aggregation called here
        names.add(word)
    return names


def as_documented(name: str, table: dict[str, str]) -> str:
    """A histogram's series (`_bucket`, `_sum`, `_count`) by the histogram's name."""
    for suffix in HISTOGRAM_SERIES:
        base = name.removesuffix(suffix)
        if base != name and table.get(base) == "histogram":
            return base
    return name


def test_metric_names_are_found_in_promql() -> None:
    expr = ('histogram_quantile(0.99, sum by (job, le) (rate(vfrec_http_request_duration_seconds_bucket'
            '{endpoint!~"/metrics|/healthz", job=~"$job"}[5m]))) > 0.25 and on (job, instance) '
            'vfrec_role_info{run_id=~"${run_id}"} or (vfrec_x_total unless vfrec_x_total offset 10m) > 2 * 1e3')
    assert metric_names(expr) == {"vfrec_http_request_duration_seconds_bucket", "vfrec_role_info", "vfrec_x_total"}


def panels(items: list[dict]) -> Iterator[dict]:
    for item in items:
        yield item
        yield from panels(item.get("panels", []))  # a collapsed row holds its panels


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def test_dashboard_queries_only_documented_metrics() -> None:
    table = documented()
    board = dashboard()
    exprs = [(panel["title"], target["expr"]) for panel in panels(board["panels"])
             for target in panel.get("targets", []) if target.get("expr")]
    assert len(exprs) >= 20, "the dashboard has lost its panels"
    unknown = {(title, name) for title, expr in exprs for name in metric_names(expr)
               if as_documented(name, table) not in table}
    assert not unknown, f"panels query metrics that docs/operations.md's table does not list: {sorted(unknown)}"
    used = {as_documented(name, table) for _, expr in exprs for name in metric_names(expr)}
    assert not set(table) - used, f"metrics in the table with no panel: {sorted(set(table) - used)}"


def test_dashboard_takes_its_data_source_and_filters_as_variables() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert {"job", "run_id"} <= set(variables)
    table = documented()
    for variable in ("job", "run_id"):
        query = variables[variable]["query"]
        text = query["query"] if isinstance(query, dict) else query
        assert metric_names(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", text)) <= set(table) | {""}, text
    for panel in panels(board["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    ids = [panel["id"] for panel in panels(board["panels"])]
    assert len(ids) == len(set(ids)), "two panels share an id"


def test_alert_rules_query_only_documented_metrics() -> None:
    yaml = pytest.importorskip("yaml")
    table = documented()
    blocks = [yaml.safe_load(block) for block in fenced("yaml")]  # each block parses
    rules = [rule for block in blocks if isinstance(block, dict) for group in block.get("groups", [])
             for rule in group["rules"]]
    assert len(rules) >= 6, "the page has lost its alert rules"
    unknown = {(rule["alert"], name) for rule in rules for name in metric_names(str(rule["expr"]))
               if as_documented(name, table) not in table and name not in PROMETHEUS_SERIES}
    assert not unknown, f"alert rules query metrics the table does not list: {sorted(unknown)}"
    scrape = [block for block in blocks if isinstance(block, dict) and "scrape_configs" in block]
    assert scrape and {job["job_name"] for job in scrape[0]["scrape_configs"]} == {
        "vfrec-coordinator", "vfrec-party-a", "vfrec-party-b"}


# ---- what the code exports -----------------------------------------------------------------------------------------

class _Endpoint:
    """What observe reads of a role's endpoint: its generation and its peers' liveness."""

    generation = 0

    def peer_liveness(self) -> dict[str, tuple[bool, float | None]]:
        return {"party_a": (True, 0.1), "coordinator": (False, 3.0)}


class _Recommender:
    def u_store_age_seconds(self) -> float:
        return 60.0


def exported_name(family) -> str:
    """The name a family is scraped under: a counter's samples end in `_total`, its family's name does not."""
    return family.name + "_total" if family.type == "counter" else family.name


@pytest.fixture
def watched_role(monkeypatch: pytest.MonkeyPatch):
    """protocol.observe as in a running role: an endpoint watched, a checkpoint written, ε being spent.
    The families read at scrape time (peers, generation, checkpoint age, ε) appear only then. The module's state
    is put back afterwards."""
    from protocol import observe  # ImportError until protocol/observe.py exists

    monkeypatch.setattr(observe, "_watched", copy.copy(observe._watched))
    monkeypatch.setattr(observe, "context", dict(observe.context))
    role_info = [(sample.labels, sample.value) for family in observe.ROLE_INFO.collect() for sample in
                 family.samples]
    observe.watch("party_b", "operations-docs", _Endpoint())
    observe.checkpoint_written()
    if hasattr(observe, "spending"):
        observe.spending(lambda: 0.5)
    yield observe
    observe.ROLE_INFO.clear()
    for labels, value in role_info:
        observe.ROLE_INFO.labels(**labels).set(value)


def test_the_table_is_what_the_code_exports(watched_role) -> None:
    from party_a.serving.metrics import Metrics

    families = list(watched_role.REGISTRY.collect()) + list(Metrics(_Recommender()).registry.collect())
    exported = {exported_name(family): family.type for family in families}
    table = documented()
    assert not set(table) - set(exported), f"documented but not exported: {sorted(set(table) - set(exported))}"
    assert not set(exported) - set(table), f"exported but not documented: {sorted(set(exported) - set(table))}"
    wrong = {name: (table[name], kind) for name, kind in exported.items() if table[name] != kind}
    assert not wrong, f"documented type, exported type: {wrong}"


# ---- systemd units and cron lines ----------------------------------------------------------------------------------

def units() -> dict[str, str]:
    """The page's unit files: name -> text, from ```ini blocks whose first line names the file."""
    found = {}
    for block in fenced("ini"):
        first = block.splitlines()[0]
        match = re.fullmatch(r"#\s*/etc/systemd/system/(\S+\.(?:service|timer))\s*", first)
        if match:
            assert match.group(1) not in found, f"{match.group(1)} twice"
            found[match.group(1)] = block
    return found


def parse(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",), comment_prefixes=("#",))
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read_string(text)
    return parser


def role_command(argv: list[str]) -> tuple[str, str | None, list[str]] | None:
    """From the arguments after the Python executable: the module, its subcommand, and all arguments."""
    if len(argv) < 2 or argv[0] != "-m":
        return None
    module, rest = argv[1], argv[2:]
    i = 0
    while i < len(rest):
        if rest[i] in OPTIONS_WITH_VALUES:
            i += 2
        elif rest[i].startswith("-"):
            i += 1
        else:
            return module, rest[i], rest
    return module, None, rest


@functools.cache
def help_of(argv: tuple[str, ...]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)


def warm(commands: list[list[str]]) -> None:
    """Run the `--help`s the checks will ask for at once, in parallel (each starts an interpreter)."""
    wanted = {tuple(argv) for argv in commands} | {tuple(argv[:2]) for argv in commands}
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(help_of, sorted(wanted - {argv for argv in wanted if len(argv) < 2})))


def check_command(where: str, python: str, argv: list[str]) -> tuple[str, str | None]:
    """The role and subcommand `python argv` runs, after checking that the role's parser accepts `argv`."""
    assert python == VENV_PYTHON, f"{where}: runs {python}, not the venv's python {VENV_PYTHON}"
    command = role_command(argv)
    assert command is not None, f"{where}: not `python -m <role> ...`: {argv}"
    module, sub, rest = command
    assert module in ROLES, f"{where}: {module} is not a role"
    assert "--config" in rest and rest[rest.index("--config") + 1].startswith("/etc/vfrec/"), where
    if "--log-format" in rest and "--log-format" not in help_of(("-m", module)).stdout:
        i = rest.index("--log-format")  # the flag is newer than this role's parser: check the rest without it
        argv = argv[:2] + rest[:i] + rest[i + 2:]
    result = help_of(tuple(argv))
    assert result.returncode == 0, f"{where}: `python {' '.join(argv)} --help` failed:\n{result.stderr}"
    assert f"usage: python -m {module}{'' if sub is None else ' ' + sub} " in result.stdout, (where, result.stdout)
    return module, sub


def test_units_parse_and_run_real_roles() -> None:
    found = units()
    assert set(EXPECTED_UNITS) <= set(found), f"missing units: {sorted(set(EXPECTED_UNITS) - set(found))}"
    warm([shlex.split(parse(text)["Service"]["ExecStart"])[1:] for name, text in found.items()
          if name.endswith(".service") and " -m " in parse(text)["Service"]["ExecStart"]])
    for name, text in found.items():
        unit = parse(text)
        if name.endswith(".timer"):
            assert {"Unit", "Timer", "Install"} <= set(unit.sections()), name
            assert unit["Timer"].get("OnCalendar"), f"{name}: no OnCalendar"
            service = unit["Timer"].get("Unit", name.removesuffix(".timer") + ".service")
            assert service in found, f"{name} starts {service}, which the page does not show"
            continue
        assert {"Unit", "Service"} <= set(unit.sections()), name
        service = unit["Service"]
        python, *argv = shlex.split(service["ExecStart"])
        assert python.startswith("/"), f"{name}: ExecStart needs an absolute path"
        for key in ("OnSuccess", "OnFailure"):
            for target in unit["Unit"].get(key, "").split():
                template = re.sub(r"@.+\.service$", "@.service", target)
                assert target in found or template in found, f"{name}: {key}={target} is not on the page"
        if name.endswith("@.service"):
            continue  # a helper (the restart after a training run), not a role
        role, sub = check_command(name, python, argv)
        if name in EXPECTED_UNITS:
            assert (role, sub) == EXPECTED_UNITS[name], name
        assert service.get("Type") == "exec", name
        assert service.get("User") and service["User"] != "root", f"{name}: runs as root"
        workdir = service.get("WorkingDirectory")
        assert workdir == f"/srv/vfrec/{role}", name
        assert service.get("ProtectSystem") == "strict" and workdir in service.get("ReadWritePaths", "").split(), (
            f"{name}: ProtectSystem=strict needs ReadWritePaths={workdir}")
        for key, value in (("NoNewPrivileges", "yes"), ("PrivateTmp", "yes"), ("ProtectHome", "yes")):
            assert service.get(key) == value, f"{name}: {key}={service.get(key)}"
        assert "VFREC_PROGRESS_SECONDS=60" in service.get("Environment", ""), name
        assert "--log-format" in argv and argv[argv.index("--log-format") + 1] == "json", name
        if sub in ("serve", "refresh") and role != "party_b":  # the services
            assert service.get("Restart") == "always", name
            assert unit["Install"].get("WantedBy") == "multi-user.target", name
        else:  # the jobs: retried a few times, never for a bad config (exit code 2)
            assert service.get("Restart") == "on-failure", name
            assert "2" in service.get("RestartPreventExitStatus", "").split(), name
            assert unit["Unit"].get("StartLimitBurst"), f"{name}: restarts without a limit"
    timers = {name for name in found if name.endswith(".timer")}
    assert "vfrec-party-b-refresh.timer" in timers
    refresh = parse(found["vfrec-party-b-refresh.timer"])["Timer"]
    assert refresh.get("Persistent") == "true" and refresh.get("RandomizedDelaySec"), "B's nightly refresh timer"


def test_cron_lines_run_real_roles() -> None:
    lines = [line for block in fenced("crontab") for line in block.splitlines()
             if line.strip() and not line.lstrip().startswith("#") and not re.match(r"^[A-Z_]+=", line)]
    commands = []
    for line in lines:
        fields = line.split(None, 6)
        assert len(fields) == 7, f"not `m h dom mon dow user command`: {line}"
        words = shlex.split(fields[6])
        assert "-m" in words, f"runs no role: {line}"
        i = words.index("-m")
        end = next((j for j in range(i, len(words)) if words[j] in ("|", "||", "&&", ";") or ">" in words[j]),
                   len(words))
        commands.append((line, words[i - 1], words[i:end]))
    warm([argv for _, _, argv in commands])
    seen = {check_command(line, python, argv) for line, python, argv in commands}
    assert ("party_b", "refresh") in seen, "no cron line for B's nightly refresh"
    assert {("party_a", None), ("party_b", None), ("coordinator", None)} <= seen, "no weekly retrain of every role"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    found = units()
    for name, text in found.items():  # the venv's python is not at /opt here: the repo's stands in for it
        (tmp_path / name).write_text(text.replace(VENV_PYTHON, sys.executable), encoding="utf-8")
    result = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / name) for name in found)],
                            capture_output=True, text=True, timeout=120)
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if str(tmp_path) in line or any(name in line for name in found)]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr
