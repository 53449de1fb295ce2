#!/usr/bin/env python3
"""The release binary, end to end, in half a minute: the paths a user takes first, on the binary CI tested.

An optimizer-only bug is real: Swift 6.3 miscompiled a task group in release builds only, and every
write across shards crashed the node that coordinated it while the whole (then debug-built) test suite
passed. CI runs the tests on an optimized build (`swift test -c release`) and this after them, on the
binary they built.

Starts 3 nodes, then through different nodes: a database of 4 shards, a hash-sharded table, a
reference table and an index; writes across shards (one transaction), reads across shards, a join
pinned to one shard, writes through a follower, rqlite's API. Every answer is checked exactly.

Usage: python3 bench/release_smoke.py .build/release/cairn
"""
import json, os, sys, tempfile, urllib.error

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench  # noqa: E402  (starting a cluster, HTTP)


def call(node, path, body):
    try:
        status, raw = bench.http("POST", f"http://{node}{path}", body, timeout=30)
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    return status, json.loads(raw)


def expect(condition, what):
    if not condition:
        raise SystemExit(f"release smoke: FAILED: {what}")
    print(f"  ok: {what.splitlines()[0][:100]}", flush=True)


def main():
    binary = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="cairn-release-smoke-")
    cluster = bench.Cairn(work, binary)
    n = cluster.http
    try:
        status, body = call(n[0], "/v1/databases", {"name": "shop", "shards": 4})
        expect(status == 201 and body["shards"] == 4, f"a database of 4 shards: {body}")
        for i, sql in enumerate(["CREATE TABLE orders (customer INTEGER NOT NULL, id INTEGER NOT NULL, total REAL, PRIMARY KEY (customer, id)) SHARD BY HASH (customer)",
                                 "CREATE TABLE countries (code TEXT PRIMARY KEY, name TEXT) REFERENCE",
                                 "CREATE INDEX orders_total ON orders (total, customer)"]):
            status, body = call(n[i % 3], "/v1/db/shop/execute", {"statements": [sql]})
            expect(status == 200 and "error" not in body["results"][0], f"{sql}: {body}")
        status, body = call(n[1], "/v1/db/shop/execute", {"statements": ["INSERT INTO countries VALUES ('FR', 'France'), ('DE', 'Germany')"]})
        expect(status == 200 and body["results"][0].get("rows_affected") == 2, f"a write to every copy of a reference table, answered once: {body}")
        rows = ", ".join(f"({c}, 1, {c * 1.5})" for c in range(1, 101))
        status, body = call(n[2], "/v1/db/shop/execute", {"statements": [f"INSERT INTO orders VALUES {rows}"]})
        expect(status == 200 and body["results"][0].get("rows_affected") == 100, f"100 rows over 4 shards in one transaction: {body}")
        status, body = call(n[0], "/v1/db/shop/query", {"statements": [
            "SELECT count(*), sum(total), max(customer) FROM orders",
            "SELECT customer FROM orders ORDER BY total DESC LIMIT 3",
            ["SELECT o.customer, c.name FROM orders o JOIN countries c ON c.code = 'FR' WHERE o.customer = ?", 42]]})
        r = body.get("results", [])
        expect(status == 200 and r[0]["rows"] == [[100, 7575.0, 100]], f"an aggregate across shards: {body}")
        expect(r[1]["rows"] == [[100], [99], [98]], f"ORDER BY ... LIMIT across shards: {r[1]}")
        expect(r[2].get("rows") == [[42, "France"]], f"a join with a reference table, pinned to one shard: {r[2]}")
        status, body = call(n[1], "/v1/db/shop/execute", {"statements": ["UPDATE orders SET total = total + 1"]})
        expect(status == 200 and body["results"][0].get("rows_affected") == 100, f"an UPDATE on every shard, atomically: {body}")
        status, body = call(n[2], "/v1/db/shop/query", {"statements": [
            "SELECT c.name, count(*) FROM orders o JOIN countries c ON c.code = CASE WHEN o.customer % 2 = 0 THEN 'FR' ELSE 'DE' END GROUP BY c.name ORDER BY 1",
            "SELECT c.code, count(o.customer) FROM countries c LEFT JOIN orders o ON o.customer = 1 AND c.code = 'FR' GROUP BY c.code ORDER BY 1"]})
        r = body.get("results", [])
        expect(status == 200 and r[0].get("rows") == [["France", 50], ["Germany", 50]], f"a join with a reference table on every shard: {body}")
        expect(r[1].get("rows") == [["DE", 0], ["FR", 1]], f"a join gathered from every shard, the reference table from one: {r[1]}")
        status, body = call(n[0], "/v1/db/shop/execute", {"statements": ["CREATE TABLE notes (body TEXT)"]})
        expect(status == 200 and "error" not in body["results"][0], f"an unsharded table beside sharded ones: {body}")
        status, body = call(n[1], "/v1/db/shop/execute", {"statements": ["INSERT INTO notes VALUES ('order 101')", "INSERT INTO orders VALUES (101, 1, 0), (102, 1, 0)"]})
        expect(status == 200 and all("error" not in x for x in body["results"]), f"sharded and unsharded tables written in one transaction: {body}")
        status, body = call(n[2], "/v1/db/shop/query", {"statements": ["SELECT count(*) FROM notes", "SELECT count(*) FROM orders"]})
        expect(status == 200 and [x.get("rows") for x in body["results"]] == [[[1]], [[102]]], f"both written: {body}")

        # The default database through a follower (the router sends the write to the leader) and rqlite's API.
        leader = cluster.leader_url().removeprefix("http://")
        follower = next(h for h in n if h != leader)
        status, body = call(follower, "/v1/db/default/execute", {"statements": ["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
                                                                                ["INSERT INTO t(v) VALUES (?)", "routed"]]})
        expect(status == 200 and body["results"][1].get("last_insert_id") == 1, f"a write through a follower: {body}")
        status, body = call(follower, "/db/execute?raft_index", [["INSERT INTO t(v) VALUES(?)", "rqlite"]])
        expect(status == 200 and "raft_index" in body and body["results"][0].get("last_insert_id") == 2, f"rqlite's execute: {body}")
        status, body = call(follower, "/db/query", ["SELECT v FROM t ORDER BY id"])
        expect(status == 200 and body["results"][0]["values"] == [["routed"], ["rqlite"]], f"rqlite's query: {body}")
    finally:
        cluster.stop()
    for i in range(3):
        log = open(os.path.join(work, f"cairn{i}.log")).read()
        expect("Program crashed" not in log and "Fatal error" not in log, f"node {i} ran without a crash")
    print("release smoke: passed")


if __name__ == "__main__":
    main()
