"""The hint store over each backend: ids, order, paging, removal, counts, atomic writes with objects."""

import pytest
import trio

from dynamo.storage import CommitError, HintAdd, HintStore, InvalidOperationError, Put, open_group_committer


def run_with_hints(backend, body):
    async def main():
        async with open_group_committer(backend) as committer:
            return await body(HintStore(committer))

    return trio.run(main)


def test_add_pending_remove_counts(make_backend):
    backend = make_backend()

    async def body(hints):
        added = [await hints.add("node-%s" % t, 7, b"b", b"k%d" % i, b"v%d" % i, 1000 + i)
                 for i, t in enumerate("abababa")]
        assert [h.hint_id for h in added] == list(range(1, 8))
        assert added[2].target == "node-a" and added[2].blob == b"v2" and added[2].created_us == 1002
        assert hints.pending("node-a") == added[0::2]
        assert hints.pending("node-b") == added[1::2]
        assert hints.pending("node-c") == []
        assert hints.counts() == {"node-a": 4, "node-b": 3}
        assert hints.count() == 7 and hints.count("node-a") == 4 and hints.count("node-c") == 0
        assert hints.targets() == {"node-a", "node-b"}
        await hints.remove([h.hint_id for h in added[1::2]] + [999])  # unknown ids are ignored
        assert hints.counts() == {"node-a": 4}
        assert hints.targets() == {"node-a"}
        await hints.remove([])
        return added

    run_with_hints(backend, body)


def test_pending_pages_in_order(make_backend):
    backend = make_backend()

    async def body(hints):
        for i in range(10):
            await hints.add("n", i % 3, b"b", b"%d" % i, b"v", i)
        pages, after = [], None
        while page := hints.pending("n", limit=4, after_id=after):
            pages.append([h.hint_id for h in page])
            after = page[-1].hint_id
        assert pages == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
        assert hints.pending("n", limit=0) == []

    run_with_hints(backend, body)


def test_has_hint_tracks_keys(make_backend):
    backend = make_backend()

    async def body(hints):
        first = await hints.add("n1", 0, b"b", b"k", b"v1", 1)
        second = await hints.add("n2", 0, b"b", b"k", b"v2", 2)  # never coalesced: both kept
        assert hints.has_hint(b"b", b"k") and not hints.has_hint(b"b", b"other")
        await hints.remove([first.hint_id])
        assert hints.has_hint(b"b", b"k")
        await hints.remove([second.hint_id])
        assert not hints.has_hint(b"b", b"k")

    run_with_hints(backend, body)


def test_ids_continue_after_reopen(make_backend, reopen):
    backend = make_backend()

    async def body(hints):
        for i in range(3):
            await hints.add("n", 0, b"b", b"%d" % i, b"v", i)

    run_with_hints(backend, body)
    backend = reopen(backend)

    async def after_restart(hints):
        hint = await hints.add("n", 0, b"b", b"new", b"v", 9)
        assert hint.hint_id == 4
        assert [h.key for h in hints.pending("n")] == [b"0", b"1", b"2", b"new"]

    run_with_hints(backend, after_restart)


def test_object_and_hint_written_atomically(make_backend):
    backend = make_backend(recording=True)
    backend.fail_if = lambda ops: any(isinstance(op, Put) and op.key == b"bad" for op in ops)

    async def body(hints):
        committer = hints.committer
        ok = hints.make("n", 3, b"b", b"good", b"v", 1)
        await committer.submit([Put(3, b"b", b"good", b"v"), HintAdd(ok)])
        bad = hints.make("n", 3, b"b", b"bad", b"v", 2)
        with pytest.raises(CommitError):
            await committer.submit([HintAdd(bad), Put(3, b"b", b"bad", b"v")])
        assert hints.pending("n") == [ok]  # the failed batch left no hint behind
        assert backend.get(3, b"b", b"good") == b"v" and backend.get(3, b"b", b"bad") is None

    run_with_hints(backend, body)


def test_bad_hints_are_refused(make_backend):
    backend = make_backend()

    async def body(hints):
        with pytest.raises(InvalidOperationError):
            await hints.add(b"node", 0, b"b", b"k", b"v", 0)
        with pytest.raises(InvalidOperationError):
            await hints.add("node", 0, "b", b"k", b"v", 0)
        with pytest.raises(InvalidOperationError):
            await hints.remove(["1"])
        assert hints.count() == 0

    run_with_hints(backend, body)
