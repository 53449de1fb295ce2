#!/usr/bin/env python3
"""Runs today's differential determinism test (Tests/CairnSQLiteTests/DeterminismTests.swift) against the
state machine of an earlier revision (63d5702 by default: before the state machine was sealed), to show
that the test catches what this work fixed. The earlier code has no read connections and no digest, so
the test is adapted: reads go to its one connection, contents are compared as SQL dumps, and the runaway
statement is left out (it would stop the earlier code forever). Prints each seed's first failure.

Usage: python3 bench/determinism_before.py [REV] [--seeds 40]
"""
import argparse, os, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = """// swift-tools-version: 6.0
import PackageDescription
let package = Package(
    name: "Before",
    targets: [
        .target(name: "CairnRaft"),
        .systemLibrary(name: "CSQLite3", pkgConfig: "sqlite3"),
        .target(name: "CairnSQLite", dependencies: ["CSQLite3", "CairnRaft"]),
        .testTarget(name: "BeforeTests", dependencies: ["CairnSQLite", "CairnRaft"]),
    ],
    swiftLanguageModes: [.v6]
)
"""
SUPPORT = """import Foundation
final class TempDB {
    let dir = NSTemporaryDirectory() + "cairn-before-" + UUID().uuidString
    init() { try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
    deinit { try? FileManager.default.removeItem(atPath: dir) }
    func path(_ name: String = "db.sqlite") -> String { dir + "/" + name }
}
"""


def adapt(s):
    pairs = [
        ('gen.entry(runaway: seed % 6 == 1 && i == 77)', 'gen.entry(runaway: false)'),
        ('var digests: [LogIndex: ContentDigest] = [:]', 'var digests: [LogIndex: String] = [:]'),
        ('                let out = try r.machine.apply(batch: batch)',
         '                let out: [[StatementResult]]\n'
         '                do { out = try r.machine.apply(batch: batch) } catch {\n'
         '                    Issue.record("seed \\(seed): replica \\(n) stopped (fail-stop) at entries \\(from)...\\(to): \\(error)")\n'
         '                    return (log.count, comparisons, 0)\n                }'),
        ('                let digest = try r.machine.reads.digest()\n                #expect(digest.index == to)\n                r.digests[to] = digest',
         '                r.digests[to] = try SQLStateMachine.dump(file: r.path)'),
        ('_ = r.machine.reads.query([gen.read()], timeoutNanos: 1_000_000_000)', '_ = r.machine.query(gen.read())'),
    ]
    for old, new in pairs:
        if old not in s:
            sys.exit(f"the test changed; adapt this script: {old[:60]}")
        s = s.replace(old, new)
    return s


def main():
    p = argparse.ArgumentParser()
    p.add_argument("rev", nargs="?", default="63d5702")
    p.add_argument("--seeds", type=int, default=40)
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="cairn-before-")
    archive = subprocess.run(["git", "-C", ROOT, "archive", a.rev, "Sources/CairnRaft", "Sources/CSQLite3", "Sources/CairnSQLite"],
                             check=True, stdout=subprocess.PIPE).stdout
    subprocess.run(["tar", "-x", "-C", work], input=archive, check=True)
    os.makedirs(os.path.join(work, "Tests", "BeforeTests"))
    open(os.path.join(work, "Package.swift"), "w").write(PACKAGE)
    open(os.path.join(work, "Tests", "BeforeTests", "Support.swift"), "w").write(SUPPORT)
    test = open(os.path.join(ROOT, "Tests", "CairnSQLiteTests", "DeterminismTests.swift")).read()
    open(os.path.join(work, "Tests", "BeforeTests", "DeterminismTests.swift"), "w").write(adapt(test))
    out = subprocess.run(["swift", "test"], cwd=work, env=dict(os.environ, CAIRN_DETERMINISM_SEEDS=str(a.seeds)),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout.decode()
    failures = [l for l in out.splitlines() if "stopped (fail-stop)" in l or "differs from replica 0" in l or "gave" in l and "on one replica" in l]
    for l in failures:
        print(l[:400])
    stops = sum("fail-stop" in l for l in failures)
    print(f"{a.rev}: {a.seeds} seeds, {len(failures)} failed ({stops} with a replica fail-stopped, {len(failures) - stops} diverged)")


if __name__ == "__main__":
    main()
