"""The Trino emulator against the real Python client ``trino`` 0.340.0, directly (no Envoy, no router).

These pin the emulator's protocol behaviour that every routing test relies on: multi-page results, the
``cluster`` column, session and transaction headers, cancel, strictness (404 for forged ids and slugs,
410 for older tokens), FAILED pages, long polls, and the introspection endpoint ``/v1/emulator/queries``.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest
import requests

import harness

NAME = "emu-east"


@pytest.fixture(scope="module")
def emu():
    harness.require_trino_client()
    emulator = harness.start_emulator(NAME, coordinator_id="k2m3n")
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
    other = harness.start_emulator("emu-west")
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
    assert requests.delete(f"{emu.url}/v1/query/{first['id']}").status_code == 204
    page = follow(first["nextUri"])
    assert page["stats"]["state"] == "FAILED" and page["error"]["errorName"] == "USER_CANCELED"
    assert "nextUri" not in page


def test_forged_ids_and_slugs_get_404(emu):
    first = post(emu, "SELECT 1")
    query_id, uri = first["id"], first["nextUri"]
    prefix, slug, token = uri.rsplit("/", 2)
    forged_id = query_id[:-5] + "zzzzz"
    for bad in (
        uri.replace(query_id, forged_id),
        f"{prefix}/{'y' + '0' * 16}/{token}",
        f"{prefix}/{slug}/0",  # the slug of token 1 does not fit token 0
        uri.replace("/queued/", "/executing/"),  # nor the executing resource
    ):
        resp = requests.get(bad)
        assert (resp.status_code, resp.text) == (404, "Query not found"), bad
        assert resp.headers["content-type"].startswith("text/plain")
    for path in (f"/v1/query/{forged_id}", f"/ui/api/query/{forged_id}", f"/ui/query.html?{forged_id}"):
        assert requests.get(emu.url + path).status_code == 404, path
    assert requests.delete(f"{emu.url}/v1/query/{forged_id}").status_code == 404
    # The real query still works after all that.
    assert follow(uri)["nextUri"]


def test_older_token_gets_410_and_the_current_one_repeats(emu):
    page = follow(post(emu, "SELECT 1 /* emulator: pages=3 rows=2 */")["nextUri"])
    first = follow(page["nextUri"])  # executing token 0
    second = follow(first["nextUri"])  # executing token 1
    assert requests.get(page["nextUri"]).status_code == 410
    assert requests.get(first["nextUri"]).json()["data"] == second["data"]  # same token, same page
    skip = second["nextUri"].rsplit("/", 1)[0] + "/9"
    assert requests.get(skip).status_code == 404
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
    first = post(emu, "SELECT 1", Host="envoy.example:8080")
    assert first["nextUri"].startswith("http://envoy.example:8080/v1/statement/queued/")
    assert first["infoUri"] == f"http://envoy.example:8080/ui/query.html?{first['id']}"


def test_info_endpoints(emu):
    info = harness.get_json(f"{emu.url}/v1/info")
    assert re.fullmatch(r"\d+\.\d\d(ns|us|ms|s|m|h|d)", info.pop("uptime")), info
    assert info == {
        "nodeVersion": {"version": "476-emulator"},
        "environment": "emulator",
        "coordinator": True,
        "starting": False,
    }
    assert harness.get_json(f"{emu.url}/v1/info/state") == "ACTIVE"
    assert harness.get_json(f"{emu.url}/v1/status")["nodeId"] == NAME
    first = post(emu, "SELECT 42")
    info = harness.get_json(f"{emu.url}/v1/query/{first['id']}")
    assert (info["queryId"], info["query"], info["session"]["user"]) == (first["id"], "SELECT 42", "raw")
    assert harness.get_json(f"{emu.url}/ui/api/query/{first['id']}")["queryId"] == first["id"]
    html = requests.get(first["infoUri"])
    assert html.status_code == 200 and first["id"] in html.text and NAME in html.text


def test_empty_statement_is_400(emu):
    resp = requests.post(f"{emu.url}/v1/statement", data=b"")
    assert resp.status_code == 400 and resp.headers["content-type"].startswith("text/plain")


def test_command_line_rejects_a_bad_coordinator_id():
    exe = harness.require_binary("trino-emulator")
    done = subprocess.run([str(exe), "--name", "x", "--coordinator-id", "abc01"], capture_output=True, timeout=30)
    assert done.returncode == 2 and b"coordinator" in done.stderr and done.stdout == b""
