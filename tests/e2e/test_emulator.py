"""The Trino emulator against the real Python client ``trino`` 0.340.0, directly (no Envoy, no router).

These pin the emulator's protocol behaviour that every routing test relies on: multi-page results, the
``cluster`` column, session and transaction headers, cancel, strictness (404 for forged ids and slugs,
410 for older tokens), FAILED pages, long polls, the introspection endpoint ``/v1/emulator/queries``, and
the spooling protocol (inline and spooled segments, download and ack, 404 for identifiers it did not issue).

The second half checks the emulator row by row against docs/trino-conformance.md: each test names the rows
it covers (``conformance: ID, ...``), and ``test_conformance_doc.py`` checks that every row has one. The
emulators here run with Trino's defaults (``forwarded=None``: reject) unless a test says otherwise.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

import harness
from raw_http import raw_http, request

NAME = "emu-east"
USER = {"X-Trino-User": "raw"}


@pytest.fixture(scope="module")
def emu():
    harness.require_trino_client()
    emulator = harness.start_emulator(NAME, coordinator_id="k2m3n", forwarded=None)
    emulator.proc.pinned = True
    try:
        yield emulator
        emulator.proc.assert_alive()
    finally:
        assert emulator.stop() == 0, "the emulator must exit cleanly on SIGTERM"


def connect(emu, user: str = "alice", **kw):
    import trino

    return trino.dbapi.connect(host="127.0.0.1", port=emu.port, user=user, http_scheme="http", **kw)


def run(emu, sql: str, **kw):
    """Run ``sql`` on a fresh connection; return (rows, cursor)."""
    cur = connect(emu, **kw).cursor()
    cur.execute(sql)
    return cur.fetchall(), cur


def post(emu, sql: str, **headers) -> dict:
    resp = requests.post(f"{emu.url}/v1/statement", data=sql, headers={"X-Trino-User": "raw", **headers})
    assert resp.status_code == 200, resp.text
    return resp.json()


def follow(uri: str) -> dict:
    resp = requests.get(uri)
    assert resp.status_code == 200, (uri, resp.status_code, resp.text)
    return resp.json()


def test_multi_page_result_is_read_fully(emu):
    rows, cur = run(emu, "SELECT 1 /* emulator: pages=3 rows=4 */")
    assert rows == [[NAME, page, row] for page in (1, 2, 3) for row in (1, 2, 3, 4)]
    assert [d[0] for d in cur.description] == ["cluster", "page", "row"]
    assert cur.query_id.endswith("_k2m3n")
    seen = emu.query(cur.query_id)
    assert seen["state"] == "FINISHED" and seen["user"] == "alice"
    # Each token fetched exactly once: one queued GET, three data pages and the final page.
    assert seen["requests"] == {
        "post": 1, "queued_get": 1, "executing_get": 4, "head": 0, "delete": 0, "info_get": 0
    }, seen["requests"]


def test_cluster_column_names_the_emulator_that_ran_the_query(emu):
    other = harness.start_emulator("emu-west", forwarded=None)
    rows_east, _ = run(emu, "SELECT 1")
    rows_west, cur = run(other, "SELECT 1")
    assert rows_east == [[NAME, 1, 1]] and rows_west == [["emu-west", 1, 1]]
    assert other.query(cur.query_id) and not emu.query(cur.query_id)


def test_set_session_then_show_session_on_one_connection(emu):
    cur = connect(emu).cursor()
    cur.execute("SET SESSION query_max_run_time = '10m'")
    assert cur.fetchall() == [[True]]
    assert cur.update_type == "SET SESSION"
    cur.execute("SET SESSION hive.note = 'a b,c'")
    cur.fetchall()
    cur.execute("SHOW SESSION")
    assert sorted(map(tuple, cur.fetchall())) == [("hive.note", "a b,c"), ("query_max_run_time", "10m")]
    headers = emu.query(cur.query_id)["headers"]
    assert "query_max_run_time=10m" in headers["x-trino-session"], headers
    cur.execute("RESET SESSION hive.note")
    cur.fetchall()
    cur.execute("SHOW SESSION")
    assert cur.fetchall() == [["query_max_run_time", "10m"]]


def test_transactions_stay_on_their_coordinator(emu):
    import trino

    conn = connect(emu, isolation_level=trino.transaction.IsolationLevel.READ_COMMITTED)
    cur = conn.cursor()
    cur.execute("SELECT 1")
    assert cur.fetchall() == [[NAME, 1, 1]]
    txn = conn.transaction.id
    assert txn and txn != "NONE"
    conn.commit()
    seen = {q["id"]: q for q in emu.queries()}
    assert seen[cur.query_id]["transaction"] == txn
    # The committed transaction is gone; one this emulator never issued was never there. (Raw HTTP: the
    # client always sends its own X-Trino-Transaction-Id.)
    for forged in (txn, "00000000-0000-4000-8000-000000000000"):
        page = post(emu, "SELECT 1", **{"X-Trino-Transaction-Id": forged})
        while "nextUri" in page:
            page = follow(page["nextUri"])
        assert page["stats"]["state"] == "FAILED" and page["error"]["errorName"] == "UNKNOWN_TRANSACTION", page
    # NONE means "no transaction".
    page = post(emu, "SELECT 1", **{"X-Trino-Transaction-Id": "NONE"})
    while "nextUri" in page:
        page = follow(page["nextUri"])
    assert "error" not in page


def test_cancel_mid_way(emu):
    cur = connect(emu).cursor()
    cur.execute("SELECT 1 /* emulator: pages=5 rows=1 delay_ms=100 */")
    assert cur.fetchone() == [NAME, 1, 1]
    query_id = cur.query_id
    cur.cancel()
    seen = emu.query(query_id)
    assert seen["state"] == "FAILED" and seen["canceled"] and seen["error"] == "USER_CANCELED", seen
    assert seen["requests"]["delete"] == 1


def test_cancel_through_query_api(emu):
    first = post(emu, "SELECT 1 /* emulator: pages=2 */")
    assert requests.delete(f"{emu.url}/v1/query/{first['id']}", headers=USER).status_code == 204
    page = follow(first["nextUri"])
    assert page["stats"]["state"] == "FAILED" and page["error"]["errorName"] == "USER_CANCELED"
    assert "nextUri" not in page


QUERY_NOT_FOUND = "Error 404 Not Found: Query not found"


def test_forged_ids_and_slugs_get_404(emu):
    """conformance: S3, S5, Q2, Q5"""
    first = post(emu, "SELECT 1")
    query_id, uri = first["id"], first["nextUri"]
    prefix, slug, token = uri.rsplit("/", 2)
    forged_id = query_id[:-5] + "zzzzz"
    for bad in (
        uri.replace(query_id, forged_id),
        f"{prefix}/{'y' + '0' * 16}/{token}",
        f"{prefix}/{slug}/0",  # the slug of token 1 does not fit token 0
        uri.replace("/queued/", "/executing/"),  # nor the executing resource (not dispatched yet)
    ):
        resp = requests.get(bad)
        assert (resp.status_code, resp.text) == (404, QUERY_NOT_FOUND), bad
        assert resp.headers["content-type"] == "text/plain"
    # /v1/query answers 410 for an id it does not hold, and a DELETE is 204 whether it holds it or not.
    resp = requests.get(f"{emu.url}/v1/query/{forged_id}", headers=USER)
    assert (resp.status_code, resp.content) == (410, b"")
    assert requests.delete(f"{emu.url}/v1/query/{forged_id}", headers=USER).status_code == 204
    # The real query still works after all that.
    assert follow(uri)["nextUri"]


def test_older_token_gets_410_and_the_current_one_repeats(emu):
    """conformance: S6, S9"""
    page = follow(post(emu, "SELECT 1 /* emulator: pages=3 rows=2 */")["nextUri"])
    first = follow(page["nextUri"])  # executing token 0
    second = follow(first["nextUri"])  # executing token 1
    gone = requests.get(page["nextUri"])
    assert (gone.status_code, gone.content, "content-type" in gone.headers) == (410, b"", False)
    assert requests.get(first["nextUri"]).json()["data"] == second["data"]  # same token, same page
    # Another token with this slug: the slug fits only its own token, so Query not found.
    skip = second["nextUri"].rsplit("/", 1)[0] + "/9"
    unknown = requests.get(skip)
    assert (unknown.status_code, unknown.text) == (404, QUERY_NOT_FOUND)
    before = emu.query(second["id"])["requests"]
    head = requests.head(second["nextUri"])
    assert (head.status_code, head.content) == (200, b"")
    after = emu.query(second["id"])["requests"]
    # HEAD is a heartbeat: it neither counts as nor acts as a GET (the next page is still token 2).
    assert (after["head"], after["executing_get"]) == (before["head"] + 1, before["executing_get"])
    assert follow(second["nextUri"])["data"] == [[NAME, 3, 1], [NAME, 3, 2]]


def test_emulator_fail_raises(emu):
    import trino

    with pytest.raises(trino.exceptions.TrinoQueryError) as err:
        run(emu, "SELECT 'emulator_fail'")
    assert err.value.error_name == "GENERIC_INTERNAL_ERROR"
    assert err.value.query_id and emu.query(err.value.query_id)["state"] == "FAILED"


def test_slow_pages_long_poll_and_still_arrive(emu):
    """conformance: S11"""
    started = time.monotonic()
    rows, cur = run(emu, "SELECT 1 /* emulator: pages=1 rows=1 delay_ms=1500 */")
    assert rows == [[NAME, 1, 1]]
    assert time.monotonic() - started >= 1.4
    # maxWait (1 s by default) ended the first executing GET with an empty RUNNING page.
    assert emu.query(cur.query_id)["requests"]["executing_get"] >= 3


def test_queued_polls_hint(emu):
    _, cur = run(emu, "SELECT 1 /* emulator: queued_polls=3 */")
    assert emu.query(cur.query_id)["requests"]["queued_get"] == 3


def test_uris_follow_the_host_header(emu):
    """conformance: U1, U3"""
    first = post(emu, "SELECT 1", Host="envoy.example:8080")
    assert first["nextUri"].startswith("http://envoy.example:8080/v1/statement/queued/")
    assert first["infoUri"] == f"http://envoy.example:8080/ui#/queries/{first['id']}"
    executing = follow(emu.url + first["nextUri"][len("http://envoy.example:8080"):])
    assert executing["nextUri"].startswith(f"{emu.url}/v1/statement/executing/{first['id']}/")


def test_info_endpoints(emu):
    """conformance: N1, N2, N3, N4, Q1, Q8, E4"""
    info = harness.get_json(f"{emu.url}/v1/info")
    assert re.fullmatch(r"\d+\.\d\d(ns|us|ms|s|m|h|d)", info.pop("uptime")), info
    assert info == {
        "nodeVersion": {"version": "483"},
        "environment": "emulator",
        "coordinator": True,
        "starting": False,
        "nodeId": NAME,
        "state": "ACTIVE",
        "coordinatorId": "k2m3n",
    }
    assert harness.get_json(f"{emu.url}/v1/info/state") == "ACTIVE"
    coordinator = requests.get(f"{emu.url}/v1/info/coordinator")
    assert (coordinator.status_code, coordinator.content) == (200, b"")
    assert harness.get_json(f"{emu.url}/v1/status")["nodeId"] == NAME
    first = post(emu, "SELECT 42")
    info = requests.get(f"{emu.url}/v1/query/{first['id']}", headers=USER).json()
    assert (info["queryId"], info["query"], info["session"]["user"]) == (first["id"], "SELECT 42", "raw")
    # The web UI's resources want a UI session, not a user header.
    ui_url = f"{emu.url}/ui/api/query/{first['id']}"
    refused = requests.get(ui_url, headers=USER)
    assert (refused.status_code, refused.headers["www-authenticate"]) == (401, "Trino-Form-Login")
    session, _ = ui_login(emu)
    assert session.get(ui_url).json()["queryId"] == first["id"]
    forged = first["id"][:-5] + "zzzzz"
    gone = session.get(f"{emu.url}/ui/api/query/{forged}")
    assert (gone.status_code, gone.text) == (410, "Error 410 Gone: HTTP 410 Gone")


def test_empty_statement_is_400(emu):
    """conformance: S2"""
    resp = requests.post(f"{emu.url}/v1/statement", data=b"", headers=USER)
    assert (resp.status_code, resp.text) == (400, "Error 400 Bad Request: SQL statement is empty")
    assert resp.headers["content-type"] == "text/plain"


def test_command_line_rejects_a_bad_coordinator_id():
    exe = harness.require_binary("trino-emulator")
    done = subprocess.run([str(exe), "--name", "x", "--coordinator-id", "abc01"], capture_output=True, timeout=30)
    assert done.returncode == 2 and b"coordinator" in done.stderr and done.stdout == b""


# --------------------------------------------------------------------------------------------------
# What the high-availability tests drive: node state, `starting`, web UI load statistics, restarts.

STATS_FIELDS = {
    "runningQueries", "queuedQueries", "blockedQueries", "activeCoordinators", "activeWorkers",
    "runningDrivers", "totalAvailableProcessors", "reservedMemory", "totalInputRows", "totalInputBytes",
    "totalCpuTimeSecs",
}


def put_json(emu, path: str, body: str) -> requests.Response:
    return requests.put(emu.url + path, data=body, headers={"Content-Type": "application/json"})


wait_for = harness.wait_for


def ui_login(emu, username: str = "router", password: str = "", redirect_path: str = ""):
    """``POST /ui/login`` on a fresh session (redirects not followed); returns (session, response)."""
    session = requests.Session()
    resp = session.post(
        f"{emu.url}/ui/login",
        data={"username": username, "password": password, "redirectPath": redirect_path},
        allow_redirects=False,
    )
    return session, resp


def test_shutting_down_refuses_new_queries_and_finishes_running_ones():
    """conformance: E1, N3"""
    harness.require_trino_client()
    import trino

    emu = harness.start_emulator("emu-drain", forwarded=None)
    assert emu.counters()["rejected_new_queries"] == 0
    # Started before the state changes: a real client reads its first page now, the rest later.
    cur = connect(emu).cursor()
    cur.execute("SELECT 1 /* emulator: pages=3 rows=1 delay_ms=200 */")
    assert cur.fetchone() == ["emu-drain", 1, 1]
    raw = follow(post(emu, "SELECT 2 /* emulator: pages=2 rows=1 */")["nextUri"])  # dispatched

    resp = put_json(emu, "/v1/emulator/state", '"SHUTTING_DOWN"')
    assert (resp.status_code, resp.json()) == (200, {"state": "SHUTTING_DOWN", "previous": "ACTIVE"})
    assert harness.get_json(f"{emu.url}/v1/info/state") == "SHUTTING_DOWN"
    assert emu.emulator_info()["state"] == "SHUTTING_DOWN"

    before = emu.counters()
    refused = requests.post(f"{emu.url}/v1/statement", data="SELECT 3", headers={"X-Trino-User": "raw"})
    assert (refused.status_code, refused.text) == (503, "server is shutting down")
    assert refused.headers["content-type"].startswith("text/plain")
    after = emu.counters()
    assert after["rejected_new_queries"] == before["rejected_new_queries"] + 1 == 1
    assert after["statement_post"] == before["statement_post"] + 1
    # The real client retries a 503 (it means "not submitted"), then gives up; nothing was created.
    with pytest.raises(trino.exceptions.HttpError):
        run(emu, "SELECT 4")
    assert emu.counters()["rejected_new_queries"] >= 2
    assert sorted(q["sql"] for q in emu.queries()) == [
        "SELECT 1 /* emulator: pages=3 rows=1 delay_ms=200 */", "SELECT 2 /* emulator: pages=2 rows=1 */"
    ]

    # What was running goes on to the end, over the client and over raw HTTP.
    assert cur.fetchall() == [["emu-drain", 2, 1], ["emu-drain", 3, 1]]
    assert emu.query(cur.query_id)["state"] == "FINISHED"
    data = []
    while "nextUri" in raw:
        raw = follow(raw["nextUri"])
        data += raw.get("data", [])
    assert raw["stats"]["state"] == "FINISHED" and data == [["emu-drain", 1, 1], ["emu-drain", 2, 1]]

    # Every state but ACTIVE refuses; a bad body changes nothing; ACTIVE accepts again.
    for state in ("DRAINING", "DRAINED", "INACTIVE", "INVALID"):
        assert put_json(emu, "/v1/emulator/state", f'"{state}"').status_code == 200
        assert harness.get_json(f"{emu.url}/v1/info/state") == state
        assert requests.post(f"{emu.url}/v1/statement", data="SELECT 5", headers=USER).status_code == 503, state
    for bad in ('"shutting_down"', '"BOGUS"', "", "1", '["ACTIVE"]'):
        resp = put_json(emu, "/v1/emulator/state", bad)
        assert resp.status_code == 400, bad
        assert harness.get_json(f"{emu.url}/v1/info/state") == "INVALID"
    assert put_json(emu, "/v1/emulator/state", '"ACTIVE"').json() == {"state": "ACTIVE", "previous": "INVALID"}
    rejected = emu.counters()["rejected_new_queries"]
    rows, _ = run(emu, "SELECT 6")
    assert rows == [["emu-drain", 1, 1]]
    assert emu.counters()["rejected_new_queries"] == rejected
    # Still a clean exit on SIGTERM, whatever the state.
    put_json(emu, "/v1/emulator/state", '"SHUTTING_DOWN"')
    assert emu.stop() == 0


def test_starting_flag_from_the_command_line_and_put():
    """conformance: E3"""
    emu = harness.start_emulator("emu-starting", extra_args=["--starting-seconds", "2"], forwarded=None)
    assert emu.info()["starting"] is True and emu.emulator_info()["starting"] is True
    assert harness.get_json(f"{emu.url}/v1/info/state") == "ACTIVE"
    # Queries are still accepted while starting, and counted as such.
    post(emu, "SELECT 1")
    assert emu.counters()["starting_queries"] == 1
    assert wait_for(lambda: emu.info()["starting"] is False, timeout=5), "still starting after 5 s"
    post(emu, "SELECT 1")
    assert (emu.counters()["starting_queries"], emu.counters()["statement_post"]) == (1, 2)

    resp = put_json(emu, "/v1/emulator/starting", "true")
    assert (resp.status_code, resp.json()) == (200, {"starting": True})
    assert emu.info()["starting"] is True
    resp = put_json(emu, "/v1/emulator/starting", "false")
    assert (resp.status_code, resp.json()) == (200, {"starting": False})
    assert emu.info()["starting"] is False
    for bad in ('"true"', "1", "", "yes"):
        assert put_json(emu, "/v1/emulator/starting", bad).status_code == 400, bad
    assert emu.info()["starting"] is False

    # Without the flag an emulator is never starting, until told so.
    plain = harness.start_emulator("emu-not-starting", forwarded=None)
    assert plain.info()["starting"] is False
    assert put_json(plain, "/v1/emulator/starting", "true").status_code == 200
    assert plain.info()["starting"] is True and harness.get_json(f"{plain.url}/v1/info/state") == "ACTIVE"


def test_ui_stats_need_a_login_and_count_queued_and_running_queries():
    """conformance: N5, N6"""
    harness.require_trino_client()
    emu = harness.start_emulator("emu-ui", forwarded=None)
    stats_url = f"{emu.url}/ui/api/stats"
    resp = requests.get(stats_url)
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Trino-Form-Login"
    forged = requests.get(stats_url, headers={"Cookie": "Trino-UI-Token=" + "0" * 64})
    assert forged.status_code == 401

    session, login = ui_login(emu)
    assert (login.status_code, login.headers["location"]) == (303, "/ui/")
    set_cookie = login.headers["set-cookie"]
    assert set_cookie.startswith("Trino-UI-Token=") and "Path=/ui" in set_cookie and "HttpOnly" in set_cookie
    token = session.cookies.get("Trino-UI-Token")
    assert token and re.fullmatch(r"[0-9a-f]{64}", token)
    # The cookie is a session of this process only.
    other = harness.start_emulator("emu-ui-other", forwarded=None)
    assert requests.get(f"{other.url}/ui/api/stats", cookies={"Trino-UI-Token": token}).status_code == 401

    def stats() -> dict:
        resp = session.get(stats_url)
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/json", resp.text
        return resp.json()

    idle = stats()
    assert STATS_FIELDS <= set(idle), idle
    assert (idle["runningQueries"], idle["queuedQueries"], idle["blockedQueries"]) == (0, 0, 0)
    assert (idle["activeCoordinators"], idle["activeWorkers"]) == (1, 1)
    assert idle["totalAvailableProcessors"] >= 1

    queued = post(emu, "SELECT 1")  # not polled yet: QUEUED
    assert (stats()["queuedQueries"], stats()["runningQueries"]) == (1, 0)

    results: list = []
    slow_sql = "/* emulator: pages=3 delay_ms=800 */ SELECT 1"
    slow = threading.Thread(target=lambda: results.append(run(emu, slow_sql)[0]))
    slow.start()
    try:
        seen = wait_for(lambda: (s := stats())["runningQueries"] == 1 and s, timeout=5)
        assert seen and seen["queuedQueries"] == 1 and seen["runningDrivers"] == 1, seen
    finally:
        slow.join(timeout=30)
    assert results == [[["emu-ui", page, 1] for page in (1, 2, 3)]]
    done = stats()
    assert (done["runningQueries"], done["queuedQueries"], done["totalInputRows"]) == (0, 1, 3), done

    assert requests.delete(f"{emu.url}/v1/query/{queued['id']}", headers=USER).status_code == 204
    assert stats()["queuedQueries"] == 0

    # A node that is not ACTIVE is no active coordinator.
    put_json(emu, "/v1/emulator/state", '"SHUTTING_DOWN"')
    assert stats()["activeCoordinators"] == 0
    counters = emu.counters()
    assert (counters["ui_logins"], counters["ui_login_failures"], counters["ui_unauthorized"]) == (1, 0, 2)
    assert counters["ui_stats"] >= 8
    # The web UI home needs the session too; logout ends it.
    assert session.get(f"{emu.url}/ui/", allow_redirects=False).status_code == 200
    assert requests.get(f"{emu.url}/ui/", allow_redirects=False).headers["location"] == "/ui/login.html"
    assert session.get(f"{emu.url}/ui/logout", allow_redirects=False).status_code == 303
    assert requests.get(stats_url, cookies={"Trino-UI-Token": token}).status_code == 401


def test_ui_login_with_a_password():
    emu = harness.start_emulator("emu-ui-pw", extra_args=["--ui-password", "s3cret"], forwarded=None)
    for username, password in (("router", ""), ("router", "wrong"), ("", "s3cret")):
        session, resp = ui_login(emu, username, password)
        assert (resp.status_code, resp.headers["location"]) == (303, "/ui/login.html"), (username, password)
        assert "set-cookie" not in resp.headers and not session.cookies
        assert session.get(f"{emu.url}/ui/api/stats").status_code == 401
    session, resp = ui_login(emu, "router", "s3cret", redirect_path="/ui/api/stats")
    assert (resp.status_code, resp.headers["location"]) == (303, "/ui/api/stats")
    assert session.get(f"{emu.url}/ui/api/stats").json()["runningQueries"] == 0
    # A client that follows the redirect lands on the stats (303: the POST becomes a GET).
    follow_session = requests.Session()
    landed = follow_session.post(
        f"{emu.url}/ui/login", data={"username": "poller", "password": "s3cret", "redirectPath": "/ui/api/stats"}
    )
    assert landed.status_code == 200 and STATS_FIELDS <= set(landed.json())
    # An off-site redirectPath is not followed.
    _, resp = ui_login(emu, "router", "s3cret", redirect_path="https://elsewhere.example/")
    assert resp.headers["location"] == "/ui/"
    counters = emu.counters()
    assert (counters["ui_logins"], counters["ui_login_failures"], counters["ui_stats"]) == (3, 3, 2)
    assert counters["ui_unauthorized"] == 3


def _lingering_connections(port: int) -> int:
    """Sockets on local port ``port`` that are neither listening nor established (TIME_WAIT, FIN_WAIT...)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] not in ("01", "0A"):  # ESTABLISHED, LISTEN
                count += 1
    return count


def test_restart_on_the_same_port_right_after_kill_9():
    first = harness.start_emulator("emu-restart", coordinator_id="r2r2r", forwarded=None)
    port = first.port
    stop = threading.Event()
    finished = []

    def load():
        # Keep-alive connections (one requests.Session each), running queries back to back.
        with requests.Session() as http:
            while not stop.is_set():
                try:
                    page = http.post(f"{first.url}/v1/statement", data="SELECT 1", headers=USER, timeout=5).json()
                    while "nextUri" in page:
                        page = http.get(page["nextUri"], timeout=5).json()
                    finished.append(page["id"])
                except (requests.RequestException, ValueError):
                    time.sleep(0.01)

    workers = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for worker in workers:
        worker.start()
    # One idle keep-alive connection besides the busy ones: the kill closes it with a FIN (nothing unread),
    # so the old process surely leaves a connection behind on the port (busy ones may end in a reset).
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        idle.sendall(b"GET /v1/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200"), "the idle connection got no answer"
        assert wait_for(lambda: len(finished) >= 40, timeout=20), "no load reached the emulator"
        old_id = finished[-1]
        assert first.proc.kill() == -9
        killed_at = time.monotonic()
        # At once, no retry: the port must bind while the old connections linger.
        lingering = _lingering_connections(port)
        second = harness.start_emulator("emu-restart", extra_args=["--listen", f"127.0.0.1:{port}"], forwarded=None)
        assert second.port == port
        rebound_after = time.monotonic() - killed_at
    finally:
        idle.close()
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
    if sys.platform.startswith("linux"):
        assert lingering > 0, "the kill left no connection behind: the test did not test the restart case"
    assert rebound_after < 5, rebound_after
    # A new process: it serves, and knows nothing of the old one's queries.
    rows, cur = run(second, "SELECT 1")
    assert rows == [["emu-restart", 1, 1]] and not cur.query_id.endswith("_r2r2r")
    assert requests.get(f"{second.url}/v1/query/{old_id}", headers=USER).status_code == 410
    assert second.stop() == 0


# --------------------------------------------------------------------------------------------------
# The spooling protocol. In Trino's default retrieval mode (STORAGE) segments are downloaded from the
# object store, which the emulator plays at its own address (`/v1/emulator/storage/{id}`), and acknowledged
# at the coordinator; `--spooling-retrieval coordinator-proxy` serves downloads from the coordinator.

SPOOLED_KEYS = ("spooled_downloads", "spooled_acks", "spooled_not_found", "spooled_bad_key")


def spool_counters(emu) -> dict[str, int]:
    counters = emu.counters()
    return {key: counters[key] for key in SPOOLED_KEYS}


def segments_of(page: dict) -> list[dict]:
    data = page.get("data")
    assert isinstance(data, dict) and data["encoding"] == "json", page
    return data["segments"]


def encoded_pages(emu, sql: str, encoding: str = "json", **headers) -> list[dict]:
    """Every page of ``sql`` posted with ``X-Trino-Query-Data-Encoding: encoding`` (raw HTTP). Each GET goes
    to the emulator itself (whatever host the URIs name) with ``headers`` again, as a proxy would send it."""
    pages = [post(emu, sql, **{"X-Trino-Query-Data-Encoding": encoding}, **headers)]
    while "nextUri" in pages[-1]:
        uri = pages[-1]["nextUri"]
        resp = requests.get(emu.url + uri[uri.index("/v1/"):], headers=headers)
        assert resp.status_code == 200, (uri, resp.status_code, resp.text)
        pages.append(resp.json())
    assert pages[-1]["stats"]["state"] == "FINISHED", pages[-1]
    return pages


def segment_headers(segment: dict) -> dict[str, str]:
    return {name: values[0] for name, values in segment.get("headers", {}).items()}


def storage_uri(emu, identifier: str) -> str:
    return f"{emu.url}/v1/emulator/storage/{identifier}"


def test_spooled_query_through_the_real_client(emu):
    """conformance: SP1, SP2"""
    before = spool_counters(emu)
    sql = "SELECT 1 /* emulator: pages=4 rows=3 spooled=1 */"
    rows, cur = run(emu, sql, encoding="json")
    assert rows == [[NAME, page, row] for page in (1, 2, 3, 4) for row in (1, 2, 3)]
    assert [d[0] for d in cur.description] == ["cluster", "page", "row"]
    # The client acknowledges each segment once it has read it, from a background thread.
    seen = wait_for(lambda: (q := emu.query(cur.query_id))["segments"]["acked"] == 4 and q, timeout=10)
    assert seen, emu.query(cur.query_id)
    assert seen["segments"] == {"issued": 4, "downloaded": 4, "acked": 4}, seen["segments"]
    assert seen["data_encoding"] == "json" and seen["headers"]["x-trino-query-data-encoding"] == "json"
    assert seen["state"] == "FINISHED"
    after = spool_counters(emu)
    assert after["spooled_downloads"] - before["spooled_downloads"] == 4
    assert after["spooled_acks"] - before["spooled_acks"] == 4
    assert (after["spooled_not_found"], after["spooled_bad_key"]) == (
        before["spooled_not_found"], before["spooled_bad_key"]
    )


def test_real_client_default_encodings_inline_small_pages_and_spool_big_ones(emu):
    """conformance: SP4"""
    import trino

    # The client offers json+zstd,json+lz4,json by default (those whose codec is installed): the emulator
    # knows only json, so it picks json, as Trino picks the first encoding it supports.
    rows, cur = run(emu, "SELECT 1 /* emulator: pages=3 rows=2 */")
    assert rows == [[NAME, page, row] for page in (1, 2, 3) for row in (1, 2)]
    seen = emu.query(cur.query_id)
    offered = seen["headers"]["x-trino-query-data-encoding"]
    assert offered.split(",")[-1] == "json" and offered == ",".join(trino.dbapi.connect("x")._client_session.encoding)
    assert seen["data_encoding"] == "json"
    assert seen["segments"] == {"issued": 0, "downloaded": 0, "acked": 0}  # small pages: inline segments

    rows, cur = run(emu, "SELECT 1 /* emulator: pages=2 rows=1001 */")
    assert len(rows) == 2002 and rows[1001] == [NAME, 2, 1] and rows[-1] == [NAME, 2, 1001]
    seen = wait_for(lambda: (q := emu.query(cur.query_id))["segments"]["acked"] == 2 and q, timeout=10)
    assert seen and seen["segments"] == {"issued": 2, "downloaded": 2, "acked": 2}, emu.query(cur.query_id)

    # A client that does not ask (encoding=None) gets the direct protocol.
    rows, cur = run(emu, "SELECT 1 /* emulator: pages=2 rows=2 spooled=1 */", encoding=None)
    assert rows == [[NAME, page, row] for page in (1, 2) for row in (1, 2)]
    seen = emu.query(cur.query_id)
    assert "x-trino-query-data-encoding" not in seen["headers"]
    assert (seen["data_encoding"], seen["segments"]) == (None, None)


def test_spooled_segment_wire_shape_download_and_ack(emu):
    """conformance: SP1, SP2, E2"""
    before = spool_counters(emu)
    pages = encoded_pages(emu, "SELECT 1 /* emulator: pages=2 rows=3 spooled=1 */", "json+zstd,json+lz4,json")
    data_pages = [p for p in pages if "data" in p]
    assert len(data_pages) == 2
    segments = [segments_of(p) for p in data_pages]
    assert [len(s) for s in segments] == [1, 1]
    seen_ids = set()
    for index, (segment,) in enumerate(segments):
        assert set(segment) == {"type", "uri", "ackUri", "metadata", "headers"}, segment
        assert segment["type"] == "spooled"
        identifier = segment["uri"].rsplit("/", 1)[1]
        assert re.fullmatch(r"[0-9a-f]{32}", identifier) and identifier not in pages[0]["id"]
        # STORAGE: the object store's URI to download, the coordinator's to acknowledge.
        assert segment["uri"] == storage_uri(emu, identifier)
        assert segment["ackUri"] == f"{emu.url}/v1/spooled/ack/{identifier}"
        expected_rows = [[NAME, index + 1, row] for row in (1, 2, 3)]
        body = json.dumps(expected_rows, separators=(",", ":")).encode()
        metadata = segment["metadata"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", metadata.pop("expiresAt")), metadata
        assert metadata == {"rowOffset": 3 * index, "rowsCount": 3, "segmentSize": len(body)}
        headers = segment_headers(segment)
        assert list(headers) == ["X-Trino-Emulator-Segment-Key"] and re.fullmatch(r"[0-9a-f]{32}", *headers.values())
        seen_ids.add(identifier)

        # The coordinator's own download resource is not for this mode.
        coordinator = requests.get(f"{emu.url}/v1/spooled/download/{identifier}", headers=headers)
        assert (coordinator.status_code, coordinator.text) == (
            503, "Error 503 Service Unavailable: Retrieval mode is STORAGE but segment resource was called"
        )
        # Download (repeatable until the ack), with the segment's headers.
        for _ in range(2):
            resp = requests.get(segment["uri"], headers=headers)
            assert resp.status_code == 200, resp.text
            assert resp.headers["content-type"] == "application/octet-stream"
            assert resp.content == body and json.loads(resp.content) == expected_rows
        # Without the key, or with another segment's key: refused, and nothing is forgotten.
        for bad in ({}, {"X-Trino-Emulator-Segment-Key": "0" * 32}):
            for uri in (segment["uri"], segment["ackUri"]):
                resp = requests.get(uri, headers=bad)
                assert resp.status_code == 400 and resp.headers["content-type"].startswith("text/plain"), uri
        ack = requests.get(segment["ackUri"], headers=headers)
        assert (ack.status_code, ack.content) == (200, b"")
        # Acknowledged: gone.
        for uri in (segment["uri"], segment["ackUri"]):
            resp = requests.get(uri, headers=headers)
            assert (resp.status_code, resp.text) == (404, "Segment not found"), uri
    assert len(seen_ids) == 2
    seen = emu.query(pages[0]["id"])
    assert seen["segments"] == {"issued": 2, "downloaded": 4, "acked": 2}
    after = spool_counters(emu)
    assert {k: after[k] - before[k] for k in SPOOLED_KEYS} == {
        "spooled_downloads": 4, "spooled_acks": 2, "spooled_not_found": 4, "spooled_bad_key": 8
    }


def test_repeated_page_names_the_same_segment_and_the_old_segments_resource_is_gone(emu):
    """conformance: SP5, M4"""
    first = post(emu, "SELECT 1 /* emulator: pages=1 rows=2 spooled=1 */", **{"X-Trino-Query-Data-Encoding": "json"})
    executing0 = follow(first["nextUri"])["nextUri"]
    page = follow(executing0)  # the data page
    repeated = follow(executing0)  # a retry of the same token
    (segment,) = segments_of(page)
    assert segments_of(repeated) == [segment]  # same token, same page, same segment
    assert emu.query(first["id"])["segments"]["issued"] == 1
    identifier = segment["uri"].rsplit("/", 1)[1]
    headers = segment_headers(segment)
    # Current releases serve no `/v1/spooled/segments/{id}` (the older SegmentResource): no resource, 404.
    old = f"{emu.url}/v1/spooled/segments/{identifier}"
    for method in ("GET", "DELETE"):
        resp = requests.request(method, old, headers=headers)
        assert (resp.status_code, resp.text) == (404, "Error 404 Not Found: HTTP 404 Not Found"), method
    assert requests.get(segment["uri"], headers=headers).status_code == 200
    assert requests.get(segment["ackUri"], headers=headers).status_code == 200
    assert emu.query(first["id"])["segments"] == {"issued": 1, "downloaded": 1, "acked": 1}


def test_forged_and_foreign_segment_identifiers_get_404(emu):
    """conformance: E2"""
    other = harness.start_emulator("emu-spool-other", forwarded=None)
    pages = encoded_pages(other, "SELECT 1 /* emulator: rows=2 spooled=1 */")
    (segment,) = segments_of(next(p for p in pages if "data" in p))
    identifier = segment["uri"].rsplit("/", 1)[1]
    headers = segment_headers(segment)
    before = spool_counters(emu)
    forged = f"{int(identifier, 16) ^ 1:032x}"
    for ident in (identifier, forged, "0" * 32, pages[0]["id"], "x"):
        for path in (f"/v1/emulator/storage/{ident}", f"/v1/spooled/ack/{ident}"):
            resp = requests.get(emu.url + path, headers=headers)
            assert (resp.status_code, resp.text) == (404, "Segment not found"), path
            assert resp.headers["content-type"].startswith("text/plain")
    assert spool_counters(emu)["spooled_not_found"] - before["spooled_not_found"] == 10
    # The emulator that issued it still serves it.
    resp = requests.get(segment["uri"], headers=headers)
    assert resp.status_code == 200 and json.loads(resp.content) == [["emu-spool-other", 1, 1], ["emu-spool-other", 1, 2]]
    assert other.counters()["spooled_not_found"] == 0


def test_inline_segments_and_what_is_not_encoded(emu):
    """conformance: SP4"""
    # Small pages: inline segments (base64 of the same JSON rows).
    pages = encoded_pages(emu, "SELECT 1 /* emulator: pages=2 rows=2 */")
    data_pages = [p for p in pages if "data" in p]
    decoded = []
    for index, page in enumerate(data_pages):
        (segment,) = segments_of(page)
        assert set(segment) == {"type", "data", "metadata"} and segment["type"] == "inline"
        raw = base64.b64decode(segment["data"])
        assert segment["metadata"] == {"rowOffset": 2 * index, "rowsCount": 2, "segmentSize": len(raw)}
        decoded += json.loads(raw)
    assert decoded == [[NAME, page, row] for page in (1, 2) for row in (1, 2)]
    # spooled=0 inlines even big pages; a page without rows has no data at all.
    pages = encoded_pages(emu, "SELECT 1 /* emulator: rows=1500 spooled=0 */")
    (segment,) = segments_of(next(p for p in pages if "data" in p))
    assert segment["type"] == "inline" and segment["metadata"]["rowsCount"] == 1500
    assert all("data" not in p for p in encoded_pages(emu, "SELECT 1 /* emulator: pages=2 rows=0 spooled=1 */"))
    # Statements that return no query rows answer as in the direct protocol, like Trino.
    pages = encoded_pages(emu, "SHOW SESSION", **{"X-Trino-Session": "a=1"})
    assert [p["data"] for p in pages if "data" in p] == [[["a", "1"]]]
    pages = encoded_pages(emu, "SET SESSION a = 1")
    assert pages[-1]["data"] == [[True]]
    # An encoding the emulator does not know, or no header: the direct protocol.
    pages = encoded_pages(emu, "SELECT 1 /* emulator: rows=2 spooled=1 */", "json+zstd,arrow")
    assert [p["data"] for p in pages if "data" in p] == [[[NAME, 1, 1], [NAME, 1, 2]]]
    assert emu.query(pages[0]["id"])["data_encoding"] is None
    page = post(emu, "SELECT 1 /* emulator: rows=2 spooled=1 */")
    data = []
    while "nextUri" in page:
        page = follow(page["nextUri"])
        data += page.get("data", [])
    assert data == [[NAME, 1, 1], [NAME, 1, 2]]
    # A bad hint value fails the query.
    pages = [post(emu, "SELECT 1 /* emulator: spooled=2 */")]
    while "nextUri" in pages[-1]:
        pages.append(follow(pages[-1]["nextUri"]))
    assert pages[-1]["error"]["errorName"] == "SYNTAX_ERROR"


def test_segment_uris_follow_host_and_forwarded_headers():
    """conformance: SP2, SP3, F2, U1"""
    emu = harness.start_emulator(
        "emu-spool-fwd", forwarded="accept", extra_args=["--spooling-retrieval", "coordinator-proxy"]
    )
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.example", "X-Forwarded-Prefix": "/trino"}
    pages = encoded_pages(emu, "SELECT 1 /* emulator: rows=1 spooled=1 */", **forwarded)
    (segment,) = segments_of(next(p for p in pages if "data" in p))
    identifier = segment["uri"].rsplit("/", 1)[1]
    assert segment["uri"] == f"https://gw.example/trino/v1/spooled/download/{identifier}"
    assert segment["ackUri"] == f"https://gw.example/trino/v1/spooled/ack/{identifier}"
    pages = encoded_pages(emu, "SELECT 1 /* emulator: rows=1 spooled=1 */", Host="envoy.example:8080")
    (segment,) = segments_of(next(p for p in pages if "data" in p))
    assert segment["uri"].startswith("http://envoy.example:8080/v1/spooled/download/")
    assert segment["ackUri"].startswith("http://envoy.example:8080/v1/spooled/ack/")
    # The emulator itself serves the path under its own root (a router strips the prefix).
    local = segment["uri"].replace("http://envoy.example:8080", emu.url)
    assert requests.get(local, headers=segment_headers(segment)).status_code == 200

    # STORAGE: the object store's URI is not the coordinator's, so forwarded headers do not touch it.
    storage = harness.start_emulator("emu-spool-storage", forwarded="accept")
    pages = encoded_pages(storage, "SELECT 1 /* emulator: rows=1 spooled=1 */", **forwarded)
    (segment,) = segments_of(next(p for p in pages if "data" in p))
    identifier = segment["uri"].rsplit("/", 1)[1]
    assert segment["uri"] == storage_uri(storage, identifier)
    assert segment["ackUri"] == f"https://gw.example/trino/v1/spooled/ack/{identifier}"

    # COORDINATOR_STORAGE_REDIRECT: the coordinator's download answers 303 to the object store.
    redirect = harness.start_emulator("emu-spool-redirect", extra_args=["--spooling-retrieval", "coordinator-storage-redirect"])
    pages = encoded_pages(redirect, "SELECT 1 /* emulator: rows=1 spooled=1 */")
    (segment,) = segments_of(next(p for p in pages if "data" in p))
    identifier = segment["uri"].rsplit("/", 1)[1]
    assert segment["uri"] == f"{redirect.url}/v1/spooled/download/{identifier}"
    resp = requests.get(segment["uri"], headers=segment_headers(segment), allow_redirects=False)
    assert (resp.status_code, resp.headers["location"]) == (303, storage_uri(redirect, identifier))
    followed = requests.get(segment["uri"], headers=segment_headers(segment))
    assert followed.status_code == 200 and json.loads(followed.content) == [["emu-spool-redirect", 1, 1]]


# --------------------------------------------------------------------------------------------------
# Conformance rows (docs/trino-conformance.md) the tests above do not show on the running binary.


def raw(emu, method: str, path: str, body: bytes = b"", headers=(), user: bytes = b"raw"):
    """(status, lower-case headers, body) of a request sent byte by byte (no client normalises the path)."""
    return raw_http(emu.port, request(method, path, body, headers, user=user))


def test_forwarded_headers_are_refused_by_default(emu):
    """conformance: F1"""
    before = emu.counters()
    for method, path, header in (
        ("GET", "/v1/info", b"X-Forwarded-Proto"),
        ("POST", "/v1/statement", b"X-Forwarded-For"),
        ("GET", "/v1/info/state", b"x-forwarded-prefix"),
        ("GET", "/v1/statement/queued/x/y/1", b"X-Forwarded-Anything"),
    ):
        status, headers, body = raw(emu, method, path, b"SELECT 1" if method == "POST" else b"", [(header, b"v")])
        assert status == 406, (path, header, status, body)
        named = "-".join(word.capitalize() for word in header.decode().split("-"))
        assert f"Server configuration does not allow processing of the {named} header".encode() in body, body
        assert headers["content-type"].startswith("text/html")
    after = emu.counters()
    assert after["forwarded_refused"] - before["forwarded_refused"] == 4
    assert after["statement_post"] == before["statement_post"], "a refused POST reached the resource"
    # RFC 7239 Forwarded is not X-Forwarded-*: taken, and not read.
    first = post(emu, "SELECT 1", Forwarded="proto=https;host=fw.example")
    assert first["nextUri"].startswith(f"{emu.url}/v1/statement/queued/")


def test_forwarded_modes_accept_and_ignore():
    """conformance: F2, F3, F5, F6, U1"""
    headers = {
        "Host": "envoy:8080", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.example:8443",
        "X-Forwarded-Port": "9999", "X-Forwarded-Prefix": "/_trino/a",
    }
    accept = harness.start_emulator("emu-fwd-accept", forwarded="accept")
    first = post(accept, "SELECT 1", **headers)
    assert first["nextUri"].startswith(f"https://gw.example:8443/_trino/a/v1/statement/queued/{first['id']}/")
    assert first["infoUri"] == f"https://gw.example:8443/_trino/a/ui#/queries/{first['id']}"
    # `--process-forwarded` is `http-server.process-forwarded=true`: accept.
    alias = harness.start_emulator("emu-fwd-alias", forwarded=None, extra_args=["--process-forwarded"])
    assert post(alias, "SELECT 1", **headers)["nextUri"].startswith("https://gw.example:8443/_trino/a/")
    assert alias.emulator_info()["forwarded"] == "accept"
    ignore = harness.start_emulator("emu-fwd-ignore", forwarded="ignore")
    first = post(ignore, "SELECT 1", **headers)
    assert first["nextUri"].startswith(f"http://envoy:8080/v1/statement/queued/{first['id']}/")
    assert ignore.emulator_info()["forwarded"] == "ignore"


@pytest.mark.parametrize(
    ("version", "prefixed", "info_uri", "identity"),
    [
        ("451", "http://h", "http://h/ui/query.html?{id}", False),
        ("457", "http://h/%2F_trino%2Fa", "http://h/%2F_trino%2Fa/ui/query.html?{id}", False),
        ("458", "http://h/_trino/a", "http://h/_trino/a/ui/query.html?{id}", False),
        ("477", "http://h/_trino/a", "http://h/_trino/a/ui/query.html?{id}", True),
        ("483", "http://h/_trino/a", "http://h/_trino/a/ui#/queries/{id}", True),
    ],
)
def test_what_each_trino_version_answers(version, prefixed, info_uri, identity):
    """conformance: F4, F5, U2, U3, N1, N2"""
    emu = harness.start_emulator(f"emu-v{version}", forwarded="accept", extra_args=["--trino-version", version])
    first = post(emu, "SELECT 1", Host="h", **{"X-Forwarded-Prefix": "/_trino/a"})
    assert first["nextUri"].startswith(f"{prefixed}/v1/statement/queued/{first['id']}/"), first["nextUri"]
    assert first["infoUri"] == info_uri.format(id=first["id"])
    info = emu.info()
    assert info["nodeVersion"] == {"version": version}
    assert ({"nodeId", "state", "coordinatorId"} <= set(info)) is identity, info
    if identity:
        assert (info["nodeId"], info["state"], info["coordinatorId"]) == (
            f"emu-v{version}", "ACTIVE", emu.emulator_info()["coordinatorId"]
        )


def test_the_query_page_is_the_web_uis_static_page(emu):
    """conformance: U2"""
    first = post(emu, "SELECT 1")
    page = f"{emu.url}/ui/query.html?{first['id']}"
    refused = requests.get(page, allow_redirects=False)
    assert (refused.status_code, refused.headers["location"]) == (303, "/ui/login.html")
    session, _ = ui_login(emu)
    for query_id in (first["id"], first["id"][:-5] + "zzzzz"):
        resp = session.get(f"{emu.url}/ui/query.html?{query_id}", allow_redirects=False)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html"), query_id


def test_query_resources_need_a_user_and_answer_by_access():
    """conformance: Q3, Q4, Q5, Q6, Q7"""
    emu = harness.start_emulator("emu-access", forwarded=None, extra_args=["--query-access", "owner"])
    alice, bob = {"X-Trino-User": "alice"}, {"X-Trino-User": "bob"}
    # No user: the authentication filter's 401, before any resource.
    for method, path, body in (("POST", "/v1/statement", b"SELECT 1"), ("GET", "/v1/query/q", b""), ("DELETE", "/v1/query/q", b"")):
        status, headers, text = raw(emu, method, path, body, user=b"")
        assert (status, text) == (401, b"Basic authentication or X-Trino-User must be sent"), (method, path)
        assert headers["www-authenticate"] == 'Basic realm="Trino"'
    password = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}
    resp = requests.post(f"{emu.url}/v1/statement", data="SELECT 1", headers=password)
    assert (resp.status_code, resp.text) == (401, "Password not allowed for insecure authentication")
    basic = {"Authorization": "Basic " + base64.b64encode(b"alice").decode()}
    mine = requests.post(f"{emu.url}/v1/statement", data="SELECT 1 /* emulator: pages=3 */", headers=basic).json()
    info = f"{emu.url}/v1/query/{mine['id']}"
    assert requests.get(info, headers=alice).json()["session"]["user"] == "alice"
    forbidden = "Error 403 Forbidden: HTTP 403 Forbidden"
    for method, url in (("GET", info), ("DELETE", info), ("PUT", f"{info}/killed"), ("PUT", f"{info}/preempted")):
        resp = requests.request(method, url, headers=bob)
        assert (resp.status_code, resp.text) == (403, forbidden), (method, url)
    assert requests.put(f"{info}/killed", headers=alice).status_code == 202
    assert requests.put(f"{info}/preempted", headers=alice).status_code == 409  # already done
    assert emu.query(mine["id"])["canceled"]
    unknown = f"{emu.url}/v1/query/{mine['id'][:-5]}zzzzz"
    for method, url, expected in (("GET", unknown, 410), ("PUT", f"{unknown}/killed", 410), ("DELETE", unknown, 204)):
        resp = requests.request(method, url, headers=bob)
        assert (resp.status_code, resp.content) == (expected, b""), (method, url)
    # A query id Jersey cannot convert (not [_a-z0-9]+): 404 without a body.
    for bad in ("ABC", "2026-01-01"):
        resp = requests.get(f"{emu.url}/v1/query/{bad}", headers=bob)
        assert (resp.status_code, resp.content) == (404, b""), bad
    # Trino's default access control lets anyone see and kill any query.
    everyone = harness.start_emulator("emu-access-all", forwarded=None)
    theirs = post(everyone, "SELECT 1")
    assert requests.get(f"{everyone.url}/v1/query/{theirs['id']}", headers=bob).status_code == 200
    assert requests.put(f"{everyone.url}/v1/query/{theirs['id']}/killed", headers=bob).status_code == 202


def test_statement_resources_methods_and_parameters(emu):
    """conformance: S7, S8, S10, S12"""
    first = post(emu, "SELECT 1 /* emulator: pages=3 */")
    queued = first["nextUri"]
    executing = follow(queued)["nextUri"]
    for method, uri, allow in (
        ("POST", executing, "DELETE,GET,HEAD,OPTIONS"),
        ("PUT", queued, "DELETE,GET,HEAD,OPTIONS"),
        ("GET", f"{emu.url}/v1/statement", "OPTIONS,POST"),
        ("POST", f"{emu.url}/v1/query/{first['id']}", "DELETE,GET,HEAD,OPTIONS"),
    ):
        resp = requests.request(method, uri, headers=USER)
        assert (resp.status_code, resp.content, resp.headers.get("allow")) == (405, b"", allow), (method, uri)
        options = requests.options(uri)
        assert (options.status_code, options.headers.get("allow")) == (200, allow), uri
    prefix, slug, token = executing.rsplit("/", 2)
    # Path parameters Jersey cannot convert: 404 without a body; a negative token fits no slug.
    for uri in (f"{prefix}/{slug}/abc", f"{prefix}/{slug}/1.5", prefix.replace(first["id"], first["id"].upper()) + f"/{slug}/0"):
        resp = requests.get(uri)
        assert (resp.status_code, resp.content) == (404, b""), uri
    assert requests.get(f"{prefix}/{slug}/-1").text == QUERY_NOT_FOUND
    # Partial cancel: 204 with the URI's slug; a stage that is not an int is 404 without a body.
    partial = f"{emu.url}/v1/statement/executing/partialCancel/{first['id']}/0/{slug}/{token}"
    assert requests.delete(partial).status_code == 204
    resp = requests.delete(partial.replace("/0/", "/x/"))
    assert (resp.status_code, resp.content) == (404, b"")
    # DELETE: any token with the right slug, 204; a slug of another token, Query not found.
    assert requests.delete(f"{prefix}/{slug}/{token}").status_code == 204
    resp = requests.delete(f"{prefix}/{slug}/{int(token) + 1}")
    assert (resp.status_code, resp.text) == (404, QUERY_NOT_FOUND)
    other = post(emu, "SELECT 1")
    assert requests.delete(other["nextUri"]).status_code == 204


def test_new_statements_as_jersey_matches_them(emu):
    """conformance: M1, M2, M3, M4, M5"""
    for path in ("/v1/statement/", "/v1/statement;x=1", "/v1/statement;x=1/"):
        status, _, body = raw(emu, "POST", path, b"SELECT 1")
        assert status == 200 and json.loads(body)["nextUri"], (path, status, body)
    status, headers, body = raw(emu, "POST", "/v1/%73tatement", b"SELECT 1")
    assert (status, body) == (404, b"Error 404 Not Found: HTTP 404 Not Found")
    assert raw(emu, "GET", "/v1/info/")[0] == 200
    assert raw(emu, "GET", "/v1/nothing")[:3:2] == (404, b"Error 404 Not Found: HTTP 404 Not Found")
    # `..` is matched as it is: an executing URI whose slug and token are `..`.
    query_id = post(emu, "SELECT 1")["id"]
    status, headers, _ = raw(emu, "POST", f"/v1/statement/executing/{query_id}/../..", b"x")
    assert (status, headers["allow"]) == (405, "DELETE,GET,HEAD,OPTIONS")
    status, _, body = raw(emu, "GET", f"/v1/statement/executing/{query_id}/../..")
    assert (status, body) == (404, b"")


def test_exactly_these_spellings_are_a_new_statement(emu):
    """conformance: M1, M2, M6, M7"""
    for path in ("/v1/statement/;", "/v1/statement/;x=1", "/v1;a=b/statement;c/;d", "/v1/statement;x=1/?y=2"):
        status, _, body = raw(emu, "POST", path, b"SELECT 1")
        assert status == 200 and json.loads(body)["nextUri"], (path, status, body)
    before = emu.counters()["statement_post"]
    for path in ("/V1/statement", "/v1/Statement", "/v1/STATEMENT;x", "/v1/statements", "/v1/statement%3Bx"):
        assert raw(emu, "POST", path, b"SELECT 1")[:3:2] == (404, b"Error 404 Not Found: HTTP 404 Not Found"), path
    for path in ("/v1/statement//", "/v1/statement/;/"):
        status, _, body = raw(emu, "POST", path, b"SELECT 1")
        assert status == 400 and b"Ambiguous URI empty segment" in body, (path, status, body)
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        status, headers, _ = raw(emu, method, "/v1/statement/;", b"x" if method == "PUT" else b"")
        assert (status, headers.get("allow")) == (405, "OPTIONS,POST"), (method, status, headers)
    assert emu.counters()["statement_post"] == before, "none of these reached the statement resource"


@pytest.mark.parametrize(
    ("row", "path", "reason"),
    [
        ("J1", "/v1/query/a%2Fb", "Ambiguous URI path separator"),
        ("J2", "/v1//info", "Ambiguous URI empty segment"),
        ("J3", "/v1/statement/executing/%2e%2e/y/1", "Ambiguous URI path segment"),
        ("J4", "/v1/statement/..;x/info", "Ambiguous URI path parameter"),
        ("J5", "/v1/query/20260101_000000_00000%255Fabcde", "Ambiguous URI path encoding"),
        ("J6", "/v1/../../info", "Bad URI"),
        ("J7", "/v1/query/a%5Cb", "Suspicious Path Character"),
        ("J7", "/v1/query/%ff", "Bad UTF-8 encoding"),
    ],
)
def test_jetty_refuses_ambiguous_paths(emu, row, path, reason):
    """conformance: J1, J2, J3, J4, J5, J6, J7"""
    before = emu.counters()
    status, headers, body = raw(emu, "GET", path)
    assert (status, headers["content-type"]) == (400, "text/html;charset=iso-8859-1"), (row, path, status, body)
    assert f"HTTP ERROR 400 {reason}".encode() in body, (row, body)
    after = emu.counters()
    assert after["uri_refused"] == before["uri_refused"] + 1
    assert after["unrouted"] == before["unrouted"] and after["query_api"] == before["query_api"]


def test_a_plain_dot_dot_is_not_refused(emu):
    """conformance: J6, M5"""
    # Not a Jetty refusal: Jersey matches the raw path, where `/v1/query/../info` names no resource.
    status, _, body = raw(emu, "GET", "/v1/query/../info")
    assert (status, body) == (404, b"Error 404 Not Found: HTTP 404 Not Found")
    assert raw(emu, "GET", "/v1/./info")[0] == 404
