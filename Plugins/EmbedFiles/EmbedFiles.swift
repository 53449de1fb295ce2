import Foundation
import PackagePlugin

/// Builds files that ship inside the `cairn` binary into the target (`EmbeddedFiles`): a Linux
/// executable has no resource bundle of its own, and a container image copies the binary alone.
/// The OpenAPI document (`docs/openapi.json`, served at `/v1/openapi.json`) and the web console's
/// files (`console/`, served under `/console`).
@main
struct EmbedFiles: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) async throws -> [Command] {
        let console = context.package.directoryURL.appending(path: "console")
        let consoleFiles = try FileManager.default.contentsOfDirectory(atPath: console.path(percentEncoded: false))
            .filter { !$0.hasPrefix(".") }.sorted().map { console.appending(path: $0) }
        let inputs = [context.package.directoryURL.appending(path: "docs/openapi.json")] + consoleFiles
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedFiles.swift")
        return [.buildCommand(displayName: "Embedding \(inputs.map(\.lastPathComponent).joined(separator: ", ")) in \(target.name)",
                              executable: try context.tool(named: "embed-files").url,
                              arguments: [output.path(percentEncoded: false)] + inputs.map { $0.path(percentEncoded: false) },
                              inputFiles: inputs, outputFiles: [output])]
    }
}
