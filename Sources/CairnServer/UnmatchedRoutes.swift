import CairnJSON
import Hummingbird
import NIOCore

/// Which paths a listener serves, with which methods: kept as its routes are added, so that a request
/// no route takes is told whether its path is unknown (404) or its method is wrong (405, with `Allow`).
/// Hummingbird's router answers both with an empty 404.
struct RouteTable: Sendable {
    /// Whose API a route belongs to, which decides the shape of the answer a request it does not take gets.
    enum Family: Sendable, Equatable {
        case native
        case rqlite
    }

    private struct Route: Sendable {
        let pattern: String
        let segments: [Substring]
        let method: HTTPRequest.Method
        let family: Family
    }

    private var routes: [Route] = []

    /// `pattern` as Hummingbird describes a route's path: `/v1/db/{db}/execute`, `*`, `**`.
    mutating func add(_ pattern: String, _ method: HTTPRequest.Method, family: Family = .native) {
        routes.append(Route(pattern: pattern, segments: Self.segments(pattern), method: method, family: family))
    }

    /// The routes at a path: the methods they take (none: no route has this path), and the pattern
    /// and family of the first.
    struct Match: Sendable {
        var methods: [HTTPRequest.Method] = []
        var pattern: String?
        var family: Family?
    }

    func allowed(at path: String) -> Match {
        let parts = Self.segments(path)
        var match = Match()
        for route in routes where Self.matches(route.segments, parts) {
            if !match.methods.contains(route.method) { match.methods.append(route.method) }
            if match.pattern == nil { (match.pattern, match.family) = (route.pattern, route.family) }
        }
        match.methods.sort { $0.rawValue < $1.rawValue }
        return match
    }

    /// The router splits paths on `/` and ignores empty parts (`/heartbeat/` is `/heartbeat`).
    private static func segments(_ path: String) -> [Substring] {
        path.split(separator: "/", omittingEmptySubsequences: true)
    }

    private static func matches(_ pattern: [Substring], _ parts: [Substring]) -> Bool {
        var i = 0
        for p in pattern {
            if p == "**" { return i < parts.count }
            guard i < parts.count else { return false }
            if p != "*" && !p.contains("{") && p != parts[i] { return false }
            i += 1
        }
        return i == parts.count
    }
}

/// Adds routes to a Hummingbird router and notes each in a `RouteTable`.
final class RecordingRouter: RouterMethods, @unchecked Sendable {
    typealias Context = CairnContext
    let router: Router<CairnContext>
    /// Filled while the routes are added, before the listener serves (then only read).
    private(set) var table = RouteTable()
    /// The family routes added now belong to.
    var family: RouteTable.Family = .native

    init() {
        router = Router(context: CairnContext.self)
    }

    @discardableResult
    func on<Responder: HTTPResponder>(_ path: RouterPath, method: HTTPRequest.Method, responder: Responder) -> Self
    where Responder.Context == CairnContext {
        table.add(path.description, method, family: family)
        router.on(path, method: method, responder: responder)
        return self
    }

    @discardableResult
    func add(middleware: any MiddlewareProtocol<Request, Response, CairnContext>) -> Self {
        router.add(middleware: middleware)
        return self
    }

    /// The router, answering requests none of its routes takes as `style` says. Call once every route is added.
    func finished(_ style: UnmatchedStyle) -> Router<CairnContext> {
        // The router's not-found responder runs every middleware, whenever it was added.
        router.add(middleware: UnmatchedRoute(table: table, style: style))
        return router
    }
}

/// How a listener answers a request none of its routes takes: in the shape the clients of its API
/// know (the originals' for the compatibility APIs).
enum UnmatchedStyle: Sendable {
    /// A route (`pattern`, as added) asked with a method it does not take, answered by the listener's
    /// own code (which may look at credentials first, or serve the request as its original would have).
    typealias WrongMethod = @Sendable (_ request: Request, _ pattern: String, _ allowed: [HTTPRequest.Method]) async -> Response

    /// CairnDB's own listener: `{"error": ...}` under `/v1/` and on native routes; on rqlite's routes
    /// `rqliteWrongMethod`, and for unknown paths outside `/v1/` rqlite's empty 404 (and 200 for OPTIONS).
    case native(rqliteWrongMethod: WrongMethod)
    /// FastAPI (seed 004's load balancer): `{"detail":"Not Found"}`, `{"detail":"Method Not Allowed"}`.
    case fastAPI
    /// Flask (seed 000): Werkzeug's HTML pages; OPTIONS answered on every route, as Flask does.
    case flask
    /// Go's `net/http` (seeds 002 and 003): `404 page not found`; a wrong method is answered by `wrongMethod`.
    case goMux(wrongMethod: WrongMethod)

    func response(_ request: Request, path: String, match: RouteTable.Match) async -> Response {
        let (method, allowed, family) = (request.method, match.methods, match.family)
        let allow = allowed.map(\.rawValue).joined(separator: ", ")
        switch self {
        case .native(let rqliteWrongMethod):
            // rqlite answers OPTIONS on any path with a 200 (a browser's CORS preflight), before routing.
            if family == .rqlite && method == .options { return Response(status: .ok) }
            if family == .rqlite, let pattern = match.pattern { return await rqliteWrongMethod(request, pattern, allowed) }
            if family == nil && !path.hasPrefix("/v1/") {
                // rqlite: an unknown path is a 404 with an empty body.
                return Response(status: method == .options ? .ok : .notFound)
            }
            if allowed.isEmpty {
                return API.json(404, .object([("error", .string("no endpoint at \(path.prefix(200)); the API is described at GET /v1/openapi.json"))]))
            }
            var r = API.json(405, .object([("error", .string("\(method.rawValue) is not allowed on \(path.prefix(200)); use \(allow)"))]))
            r.headers[.allow] = allow
            return r
        case .fastAPI:
            if allowed.isEmpty { return API.json(404, .object([("detail", .string("Not Found"))])) }
            var r = API.json(405, .object([("detail", .string("Method Not Allowed"))]))
            r.headers[.allow] = allow
            return r
        case .flask:
            // Flask adds OPTIONS to every route (a 200 with `Allow` and no body).
            let methods = (allowed.map(\.rawValue) + ["OPTIONS"]).sorted().joined(separator: ", ")
            if !allowed.isEmpty && method == .options { return Response(status: .ok, headers: [.allow: methods]) }
            let (status, title, text) = allowed.isEmpty
                ? (404, "Not Found", "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.")
                : (405, "Method Not Allowed", "The method is not allowed for the requested URL.")
            let html = "<!doctype html>\n<html lang=en>\n<title>\(status) \(title)</title>\n<h1>\(title)</h1>\n<p>\(text)</p>\n"
            var r = Response(status: .init(code: status), headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: html)))
            if !allowed.isEmpty { r.headers[.allow] = methods }
            return r
        case .goMux(let wrongMethod):
            if let pattern = match.pattern { return await wrongMethod(request, pattern, allowed) }
            return Response(status: .notFound, headers: [.contentType: "text/plain; charset=utf-8", .xContentTypeOptions: "nosniff"],
                            body: .init(byteBuffer: ByteBuffer(string: "404 page not found\n")))
        }
    }
}

/// Answers, as its listener's API would, a request that reached the router's not-found responder.
struct UnmatchedRoute: RouterMiddleware {
    typealias Context = CairnContext
    let table: RouteTable
    let style: UnmatchedStyle

    func handle(_ request: Request, context: CairnContext, next: (Request, CairnContext) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound && context.endpointPath == "NotFound" {
            // Hummingbird's not-found responder names the endpoint so before it throws.
            let path = request.uri.path
            var match = table.allowed(at: path)
            // The router found no route although the table lists one for this method: its tree prefers
            // a fixed segment to a parameter and does not go back, so the path is unknown to it.
            if match.methods.contains(request.method) { match = RouteTable.Match() }
            return await style.response(request, path: path, match: match)
        }
    }
}
