import CairnJSON
import Foundation

/// A request an older system's API refuses, in that system's own error shape: the status and the body
/// its clients expect (seed 004's `{"message": ..., "status": "failure"}`, FastAPI's 422 `detail`, ...).
public struct CompatFailure: Error, Equatable {
    public var status: Int
    public var body: JSON
    /// For an original that answered errors as plain text (Go's `http.Error`): the text, sent instead
    /// of `body`.
    public var text: String?

    public init(status: Int, body: JSON) {
        self.status = status
        self.body = body
    }

    public init(status: Int, text: String) {
        self.status = status
        body = .null
        self.text = text
    }
}

/// Reading values out of a request body the way the originals' validators (pydantic, in lax mode) did.
public enum Lax {
    /// A whole number: a JSON integer, a float with no fraction, or a string holding one.
    public static func integer(_ json: JSON?) -> Int64? {
        switch json {
        case .number(let text)?:
            if let v = Int64(text) { return v }
            if let d = Double(text), d.rounded() == d, abs(d) < 9.0e15 { return Int64(d) }
            return nil
        case .string(let text)?:
            return Int64(text.trimmingCharacters(in: .whitespaces))
        default:
            return nil
        }
    }

    /// A number: a JSON number or a string holding one.
    public static func number(_ json: JSON?) -> Double? {
        switch json {
        case .number(let text)?: return Double(text).flatMap { $0.isFinite ? $0 : nil }
        case .string(let text)?: return Double(text.trimmingCharacters(in: .whitespaces)).flatMap { $0.isFinite ? $0 : nil }
        default: return nil
        }
    }
}
