/// The entry was not committed, and will not be: sending it again cannot apply it twice.
public struct NotCommitted: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

/// The entry may have been committed (it was proposed, or sent to a node that may have proposed it, and
/// then the answer was lost): sending it again could apply it twice.
public struct OutcomeUnknown: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

/// Why the router could not serve a request, for the API to answer with.
public enum RouteError: Error, CustomStringConvertible, Equatable {
    /// No such database (HTTP 404).
    case notFound(String)
    /// Nothing could serve it in time; retrying later may work (HTTP 503).
    case unavailable(String)
    /// A node refused it for good, with the HTTP status to answer.
    case refused(status: Int, message: String)

    public var description: String {
        switch self {
        case .notFound(let m), .unavailable(let m), .refused(_, let m): return m
        }
    }
}
