import CairnQuery
import Testing

@Suite struct TokenTests {
    @Test("remembered tokens are the text's own tokens, for texts seen again, texts too long to keep, and more texts than are kept")
    func rememberedTokensAreTheTextsTokens() throws {
        let texts = (0..<5_000).map { "SELECT v FROM t\($0 % 4_500) WHERE k = ? AND s = 'a''b' -- \($0)" }
            + ["SELECT " + String(repeating: "x + ", count: 1_000) + "1"]
        for round in 0..<2 {
            for text in texts.shuffled() {
                #expect(try SQLLexer.rememberedTokens(text) == SQLLexer.tokens(text), "round \(round): \(text.prefix(60))")
            }
        }
        #expect(throws: (any Error).self) { try SQLLexer.rememberedTokens("SELECT 'unterminated") }
        #expect(throws: (any Error).self) { try SQLLexer.rememberedTokens("SELECT 'unterminated") }
        // Equal as Swift strings (canonically equivalent), different bytes: each keeps its own tokens.
        let composed = "SELECT v FROM t WHERE k = 'caf\u{E9}'", decomposed = "SELECT v FROM t WHERE k = 'cafe\u{301}'"
        for text in [composed, decomposed, composed, decomposed] {
            #expect(try SQLLexer.rememberedTokens(text).map { Array($0.text.utf8) } == SQLLexer.tokens(text).map { Array($0.text.utf8) })
        }
    }

    @Test("keywords match in any ASCII case, as SQLite's do, and nothing else folds")
    func keywordsFoldASCIIOnly() throws {
        let tokens = try SQLLexer.tokens("select SeLeCt SELECTS \"select\" ſelect _elect")
        #expect(tokens.map { $0.isWord("SELECT") } == [true, true, false, false, false, false])
        #expect(try SQLLexer.tokens("sel").first?.isWord("SELECT") == false)
    }

    @Test("names are lowercased as the catalog lowercases them")
    func namesLowercase() throws {
        for text in ["orders", "Orders", "ORDERS_2", "\"Straße\"", "ÉTÉ", "[MiXed Name]", "`x`"] {
            let token = try #require(try SQLLexer.tokens(text).first)
            #expect(token.name == token.value.lowercased(), "\(text)")
        }
    }

    @Test("a blob literal ends where SQLite's does: at the first quote after its hex digits, an even number of them")
    func blobsAsSQLiteReadsThem() throws {
        // SQLite reads X'AB' and then a string: a checker reading one blob would see the ; inside it.
        let tokens = try SQLLexer.tokens("x'AB''; DROP TABLE t; --'")
        #expect(tokens.map(\.kind) == [.blob, .string], "\(tokens.map(\.text))")
        #expect(tokens.first?.text == "x'AB'")
        #expect(try SQLLexer.tokens("SELECT X'', x'00fF'").filter { $0.kind == .blob }.map(\.text) == ["X''", "x'00fF'"])
        for illegal in ["SELECT x'ABC'", "SELECT x'G0'", "SELECT x'AB", "SELECT x'A B'"] {
            #expect(throws: SQLSyntaxError.self, "\(illegal)") { try SQLLexer.tokens(illegal) }
        }
    }
}
