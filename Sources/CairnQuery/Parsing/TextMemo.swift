import CairnSQLite
import Foundation

/// What was made from statement texts seen lately (their tokens, a SELECT's shape): clients send the
/// same few texts over and over (with parameters, or from a driver's templates), and a sharded request
/// is lexed by several steps (which tables it mentions, then its plan). Only what is a function of the
/// text alone is kept, and texts are told apart by their bytes (`SQLTextKey`), so a remembered value
/// is always right. Bounded: texts over `maxTextBytes` are
/// not kept, and a memo starts afresh when full.
final class TextMemo<Value: Sendable>: @unchecked Sendable {
    /// A memo's size: entries of up to 2 KiB of text and what was made of it (a few hundred tokens).
    static var maxTexts: Int { 1_024 }
    static var maxTextBytes: Int { 2_048 }

    private let lock = NSLock()
    private var values: [SQLTextKey: Value] = [:]

    func value(_ sql: String, _ make: (String) throws -> Value) rethrows -> Value {
        guard sql.utf8.count <= Self.maxTextBytes else { return try make(sql) }
        lock.lock()
        let known = values[SQLTextKey(sql)]
        lock.unlock()
        if let known { return known }
        let made = try make(sql)
        lock.lock()
        if values.count >= Self.maxTexts { values.removeAll(keepingCapacity: true) }
        values[SQLTextKey(sql)] = made
        lock.unlock()
        return made
    }
}

extension SQLLexer {
    private static let remembered = TextMemo<[Token]>()

    /// `tokens`, remembered for texts lexed lately (`TextMemo`).
    public static func rememberedTokens(_ sql: String) throws -> [Token] {
        try remembered.value(sql, tokens)
    }
}
