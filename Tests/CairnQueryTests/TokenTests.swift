import CairnQuery
import Testing

@Suite struct TokenTests {
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
}
