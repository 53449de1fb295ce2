import Foundation
import PackagePlugin

/// Builds files that ship inside the `cairn` binary into the target (`EmbeddedFiles`): a Linux
/// executable has no resource bundle of its own, and a container image copies the binary alone.
/// Today: the OpenAPI document (`docs/openapi.json`), served at `/v1/openapi.json`.
@main
struct EmbedFiles: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) async throws -> [Command] {
        let inputs = ["docs/openapi.json"].map { context.package.directoryURL.appending(path: $0) }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedFiles.swift")
        return [.buildCommand(displayName: "Embedding \(inputs.map(\.lastPathComponent).joined(separator: ", ")) in \(target.name)",
                              executable: try context.tool(named: "embed-files").url,
                              arguments: [output.path(percentEncoded: false)] + inputs.map { $0.path(percentEncoded: false) },
                              inputFiles: inputs, outputFiles: [output])]
    }
}
