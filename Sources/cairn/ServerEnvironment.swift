import Foundation

/// `cairn server`'s flags from the environment, for containers and service managers: `CAIRN_HTTP_ADDR`
/// is `--http-addr`, `CAIRN_INSECURE_DEV=true` is `--insecure-dev`, and so on for every option (the
/// name upper-cased, dashes as underscores). A flag on the command line wins over its variable. A
/// repeatable option (`--compat`) takes several values separated by spaces.
enum ServerEnvironment {
    /// Variables CairnDB reads for other things (secrets, the CLI's connection): never reported as unknown.
    static let notFlags: Set<String> = ["CAIRN_ADMIN_PASSWORD", "CAIRN_JOIN_PASSWORD", "CAIRN_JOIN_TOKEN", "CAIRN_CA_CERT",
                                        "CAIRN_SUPERVISOR_TOKEN", "CAIRN_PASSWORD", "CAIRN_USER", "CAIRN_HOST", "CAIRN_TOKEN", "CAIRN_HOME"]
    static let repeatable: Set<String> = ["--compat"]

    struct Option: Equatable {
        var name: String
        var takesValue: Bool
    }

    /// The long options a help screen lists (`--name <value>`, or `--flag` alone).
    static func options(inHelp help: String) -> [Option] {
        var out: [Option] = []
        for line in help.split(separator: "\n") {
            let trimmed = line.drop { $0 == " " }
            guard trimmed.count < line.count else { continue }
            var words = trimmed.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true).map(String.init)
            if words.first?.hasPrefix("-") == true && words.first?.hasPrefix("--") == false && words.first?.hasSuffix(",") == true { words.removeFirst() }
            guard let flag = words.first, flag.hasPrefix("--"), flag.count > 2,
                  flag.dropFirst(2).allSatisfy({ $0.isLowercase || $0.isNumber || $0 == "-" }) else { continue }
            let option = Option(name: flag, takesValue: words.count > 1 && words[1].hasPrefix("<"))
            if flag != "--help" && flag != "--version" && !out.contains(option) { out.append(option) }
        }
        return out
    }

    /// The arguments the environment adds to `given`, and a line for each `CAIRN_` variable that
    /// names no option (a typo would otherwise be silently ignored).
    static func arguments(from environment: [String: String], given: [String], options: [Option]) -> (arguments: [String], warnings: [String]) {
        var added: [String] = [], warnings: [String] = []
        let byVariable = Dictionary(options.map { (variable(for: $0.name), $0) }, uniquingKeysWith: { a, _ in a })
        for (key, value) in environment.sorted(by: { $0.key < $1.key }) where key.hasPrefix("CAIRN_") && !notFlags.contains(key) {
            guard let option = byVariable[key] else {
                warnings.append("cairn server: ignoring \(key): there is no --\(key.dropFirst(6).lowercased().replacingOccurrences(of: "_", with: "-")) option")
                continue
            }
            // The command line wins.
            if given.contains(where: { $0 == option.name || $0.hasPrefix(option.name + "=") }) { continue }
            if option.takesValue {
                let values = repeatable.contains(option.name) ? value.split(separator: " ").map(String.init) : [value]
                for v in values { added += [option.name, v] }
            } else {
                switch value.lowercased() {
                case "1", "true", "yes", "on": added.append(option.name)
                case "0", "false", "no", "off", "": break
                default: warnings.append("cairn server: ignoring \(key)=\(value): a flag's variable is true or false")
                }
            }
        }
        return (added, warnings)
    }

    static func variable(for option: String) -> String {
        "CAIRN_" + option.dropFirst(2).uppercased().replacingOccurrences(of: "-", with: "_")
    }
}
