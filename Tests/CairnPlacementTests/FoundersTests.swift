import CairnPlacement
import CairnRaft
import Testing

@Suite struct FoundersTests {
    @Test(arguments: [(3, 16, 3), (5, 16, 3), (10, 16, 3), (4, 7, 3), (2, 16, 3), (6, 64, 3), (7, 32, 5)])
    func newShardsSpreadEvenly(nodes: Int, shards: Int, rf: Int) {
        let load = Dictionary(uniqueKeysWithValues: (1...nodes).map { (NodeID($0), 0) })
        let founders = Placement.founders(groups: shards, replicationFactor: rf, load: load)
        #expect(founders.count == shards)
        var counts = load
        for group in founders {
            #expect(group.count == min(rf, nodes))
            #expect(Set(group).count == group.count, "two replicas of a group on one node")
            for n in group { counts[n]! += 1 }
        }
        #expect(counts.values.max()! - counts.values.min()! <= 1, "\(counts)")
    }

    @Test func newGroupsGoWhereLoadIsLeast() {
        let founders = Placement.founders(groups: 1, replicationFactor: 3, load: [1: 5, 2: 0, 3: 1, 4: 0, 5: 9])
        #expect(founders == [[2, 3, 4]])
    }
}
