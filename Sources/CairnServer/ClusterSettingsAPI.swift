import CairnCluster
import CairnJSON
import CairnSQLite
import Foundation
import Hummingbird

/// `GET /v1/cluster/settings` (the settings in force) and `PUT /v1/cluster/settings` (change any of
/// them, checked as a whole: `{"dead_after_ms": 600000}`), kept in the catalog for every node.
extension API {
    func addSettingsRoutes(to router: RecordingRouter) {
        router.get("/v1/cluster/settings") { request, _ in
            await self.respond(request, .status) { _ in
                Self.json(200, Self.settingsJSON(try await self.committedCatalog().settings(defaults: self.cluster.settingDefaults)))
            }
        }
        router.put("/v1/cluster/settings") { request, _ in
            await self.respond(request, .all) { who in
                guard case .object(let members) = try self.parse(try await self.body(of: request)), !members.isEmpty else {
                    throw HTTPFailure.badRequest("send an object of settings to change, such as {\"dead_after_ms\": 600000}; the settings are \(ClusterSettings.names.joined(separator: ", "))")
                }
                var changes: [String: Int64] = [:]
                for (name, value) in members {
                    guard case .number(let text) = value, let v = Int64(text) else {
                        throw HTTPFailure.badRequest("\(name) takes a whole number")
                    }
                    changes[name] = v
                }
                let current = try await self.committedCatalog().settings(defaults: self.cluster.settingDefaults)
                let statements: [SQLStatement]
                do {
                    statements = try ClusterSettings.change(changes, current: current)
                } catch ClusterError.invalid(let why) {
                    throw HTTPFailure.badRequest(why)
                }
                self.audit.record(who, action: "change cluster settings " + changes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "), database: nil)
                try await self.cluster.changeCatalog(statements, hops: who.hops)
                try await self.awaitCatalog { c in
                    let s = c.settings(defaults: self.cluster.settingDefaults).values
                    return changes.allSatisfy { change in s.contains { $0.0 == change.key && $0.1 == change.value } }
                }
                return Self.json(200, Self.settingsJSON(self.cluster.settings))
            }
        }
    }

    static func settingsJSON(_ s: ClusterSettings) -> JSON {
        .object(s.values.map { ($0.0, .int($0.1)) })
    }
}
