import Hummingbird
import NIOCore

/// The web console: static files (`console/`, built into the binary) that use this node's own API
/// from the browser. `/console` is its page; `/` leads there.
extension API {
    func addConsole(to router: RecordingRouter) {
        router.get("/console") { _, _ in Self.consoleFile("index.html") }
        router.get("/console/:file") { _, context in Self.consoleFile(try context.parameters.require("file")) }
        router.get("/") { _, _ in Response(status: .found, headers: [.location: "/console"]) }
    }

    static let consoleTypes = ["html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"]

    /// Only the console's own files, by name (`EmbeddedFiles` also holds the OpenAPI document).
    static let consoleFiles: [String: (type: String, bytes: [UInt8])] = {
        var files: [String: (String, [UInt8])] = [:]
        for name in EmbeddedFiles.base64.keys {
            guard let ext = name.split(separator: ".").last.map(String.init), let type = consoleTypes[ext], name != "openapi.json",
                  let bytes = EmbeddedFiles.bytes(name) else { continue }
            files[name] = (type, bytes)
        }
        return files
    }()

    static func consoleFile(_ name: String) -> Response {
        guard let file = consoleFiles[name] else {
            return Response(status: .notFound, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: #"{"error":"the console has no file of that name"}"#)))
        }
        var headers: HTTPFields = [.contentType: file.type, .cacheControl: "no-cache"]
        // The console runs only its own script and style, and sends requests only to this node.
        headers[.contentSecurityPolicy] = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
        headers[.xContentTypeOptions] = "nosniff"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: file.bytes)))
    }
}
