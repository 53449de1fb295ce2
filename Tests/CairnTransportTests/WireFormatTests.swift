import Testing
import CairnRaft
@testable import CairnTransport

@Suite("Wire format")
struct WireFormatTests {
    let sample: [Envelope] = [
        Envelope(group: 7, message: Message(kind: .append, from: 1, to: 2, term: 3, logTerm: 2, index: 10,
                                            entries: [Entry(term: 3, index: 11, data: [1, 2, 3]),
                                                      Entry(term: 3, index: 12, kind: .confChange, data: ConfState(voters: [1, 2]).encoded())],
                                            commit: 9)),
        Envelope(group: 1, message: Message(kind: .appendResponse, from: 2, to: 1, term: 3, index: 12, reject: true, rejectHint: 5)),
        Envelope(group: 2, message: Message(kind: .snapshot, from: 1, to: 3, term: 4,
                                            snapshot: Snapshot(metadata: SnapshotMetadata(index: 100, term: 4, confState: ConfState(voters: [1, 3], learners: [4])),
                                                               data: Array(repeating: 0xAB, count: 1000)))),
        Envelope(group: 3, message: Message(kind: .heartbeat, from: 1, to: 2, term: 9, commit: 4, context: 77)),
        Envelope(group: 2, message: Message(kind: .snapshot, from: 1, to: 3, term: 4,
                                            snapshot: Snapshot(metadata: SnapshotMetadata(index: 100, term: 4, confState: ConfState(voters: [1, 3])))),
                 chunk: SnapshotChunk(offset: 4096, totalBytes: 10_000, data: Array(repeating: 7, count: 4096), fileChecksum: 0xDEAD_BEEF)),
        Envelope(group: 5, message: Message(kind: .heartbeat, from: 2, to: 1, term: 8, commit: 40), quiesce: true),
        // A follower refusing a stream while it receives others.
        Envelope(group: 2, message: Message(kind: .snapshot, from: 3, to: 1, term: 4,
                                            snapshot: Snapshot(metadata: SnapshotMetadata(index: 100, term: 4, confState: ConfState(voters: [1, 3])))),
                 snapshotBusy: true),
    ]

    @Test("a batch of envelopes round-trips through one frame")
    func roundTrip() throws {
        let frame = WireFormat.frame(sample)
        var c = 0
        let length = Int(ByteCoding.readUInt32(frame, &c)!)
        #expect(length == frame.count - 4)
        #expect(try WireFormat.envelopes(inFrameBody: Array(frame[4...])) == sample)
    }

    @Test("every kind of message round-trips", arguments: MessageKind.allCases)
    func everyKind(kind: MessageKind) throws {
        let e = Envelope(group: 1, message: Message(kind: kind, from: 1, to: 2, term: .max, logTerm: 1, index: 2, commit: 3,
                                                     reject: true, rejectHint: 4, context: 5))
        #expect(try WireFormat.envelopes(inFrameBody: Array(WireFormat.frame([e])[4...])) == [e])
    }

    @Test("the snapshot-busy flag rides only on a snapshot message")
    func busyOnlyOnSnapshots() throws {
        var frame = Array(WireFormat.frame([Envelope(group: 1, message: Message(kind: .heartbeat, from: 1, to: 2, term: 1))])[4...])
        // The envelope's last byte is its extension: 3 (busy) on a heartbeat is refused.
        frame[frame.count - 1] = 3
        #expect(throws: WireError.self) { try WireFormat.envelopes(inFrameBody: frame) }
    }

    @Test("the handshake names the sender and checks magic and version")
    func handshake() throws {
        #expect(try WireFormat.parseHandshake(WireFormat.handshake(from: 42)) == 42)
        var other = WireFormat.handshake(from: 42)
        other[5] = 9
        #expect(throws: WireError.versionMismatch(ours: WireFormat.version, theirs: 9)) { try WireFormat.parseHandshake(other) }
        var http = Array("GET / HTTP/1.1\r\n".utf8)
        http.removeLast()
        #expect(throws: WireError.notCairn) { try WireFormat.parseHandshake(http) }
    }

    @Test("every truncation of a frame is refused, never a crash")
    func truncations() {
        let body = Array(WireFormat.frame(sample)[4...])
        for cut in 0..<body.count {
            #expect(throws: WireError.self) { try WireFormat.envelopes(inFrameBody: Array(body[..<cut])) }
        }
    }

    @Test("random bytes are refused, never a crash")
    func garbage() {
        var rng = SplitMix64(seed: 5)
        let body = Array(WireFormat.frame(sample)[4...])
        for _ in 0..<3000 {
            var bytes = body
            // Flip a few bytes anywhere, including counts and lengths.
            for _ in 0..<Int(rng.below(4) + 1) { bytes[Int(rng.below(UInt64(bytes.count)))] = UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? WireFormat.envelopes(inFrameBody: bytes)
        }
        for n in 0..<200 {
            let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? WireFormat.envelopes(inFrameBody: bytes)
        }
    }

    @Test("200,000 random and mutated frames: the decoder refuses or decodes each, never traps, and what it decodes survives a round trip")
    func fuzzDecoder() {
        var rng = SplitMix64(seed: 7_777)
        let valid = Array(WireFormat.frame(sample)[4...])
        var decoded = 0, refused = 0
        for round in 0..<200_000 {
            var body: [UInt8]
            switch round % 4 {
            case 0:
                body = (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            case 1:
                // A valid frame with bytes flipped: lengths and counts that lie, kinds out of range.
                body = valid
                for _ in 0..<(1 + rng.next() % 4) { body[Int(rng.next() % UInt64(body.count))] = UInt8(truncatingIfNeeded: rng.next()) }
            case 2:
                body = Array(valid[..<Int(rng.next() % UInt64(valid.count))])
            default:
                // Counts and lengths at the edge of the number range.
                body = valid
                let at = Int(rng.next() % UInt64(body.count - 4))
                for k in 0..<4 { body[at + k] = 0xFF }
            }
            if let envelopes = try? WireFormat.envelopes(inFrameBody: body) {
                decoded += 1
                // Lenient bytes (a flag that is neither 0 nor 1) decode; what they decode to is stable.
                #expect((try? WireFormat.envelopes(inFrameBody: Array(WireFormat.frame(envelopes)[4...]))) == envelopes, "round \(round)")
            } else {
                refused += 1
            }
        }
        #expect(refused > 100_000)
        print("wire fuzz: \(decoded) decoded, \(refused) refused, no trap")
    }
}
