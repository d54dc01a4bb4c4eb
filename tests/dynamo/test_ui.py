"""The ring page as a document (well-formed, self-contained, only its own routes), its snapshot embedding,
the shared ring summary against ring/, and the page's script under Node.js and headless Chromium when
those are installed."""

from __future__ import annotations

import html.parser
import json
import random
import re
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo.http.message import parse_query
from dynamo.ui import PAGE_ROUTES, node_letter, preflist_report, ring_page, ring_summary
from ring import Ring, ownership_report, preference_list, window_violations
from ring.spacing import violated_windows, violations_min
from tools.ringviz import moving_partitions

VOID = {"meta", "link", "br", "hr", "img", "input", "source", "wbr", "area", "base", "col", "embed", "track"}
SVG_NS = "http://www.w3.org/2000/svg"


class PageParser(html.parser.HTMLParser):
    """Checks nesting; collects scripts (with their attributes), attributes and ids."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.scripts: list[tuple[dict, str]] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.ids: list[str] = []
        self.doctype = None

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs) -> None:
        self._attrs(tag, attrs)
        if tag == "script":
            self.scripts.append((dict(attrs), ""))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs) -> None:
        self._attrs(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "script":
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def _attrs(self, tag: str, attrs) -> None:
        for name, value in attrs:
            self.attributes.append((tag, name, value))
            if name == "id":
                self.ids.append(value)


def parse(page: bytes) -> PageParser:
    parser = PageParser()
    parser.feed(page.decode("utf-8"))
    parser.close()
    assert parser.errors == [] and parser.stack == [], (parser.errors, parser.stack)
    return parser


def page_script(page: bytes) -> str:
    code = [text for attrs, text in parse(page).scripts if "type" not in attrs]
    assert len(code) == 1
    return code[0]


def snapshot_of(page: bytes):
    data = [text for attrs, text in parse(page).scripts if attrs.get("type") == "application/json"]
    assert len(data) == 1
    return json.loads(data[0])


def ring_document(ring: Ring, status: dict[str, str] | None = None) -> dict:
    status = status or {}
    return {"version": ring.version, "partitions": ring.partitions, "n_val": 3, "target_n": ring.target_n,
            "owners": list(ring.owners),
            "nodes": {n: {"status": status.get(n, "up"), "http": f"127.0.0.1:{8000 + i}", "rpc": None,
                          "partitions": len(ring.partitions_of(n))} for i, n in enumerate(ring.nodes)}}


# ---- the document -----------------------------------------------------------------------------------

def test_the_page_is_one_well_formed_self_contained_document():
    page = ring_page()
    parser = parse(page)
    assert parser.doctype.lower() == "doctype html"
    assert len(parser.ids) == len(set(parser.ids)), "duplicate ids"
    assert not [a for a in parser.attributes if a[1] in ("src", "href", "srcset", "action", "formaction")]
    assert all(not a[1].startswith("on") for a in parser.attributes), "inline handlers"
    assert b"@import" not in page and b"@STYLE@" not in page and b"@SCRIPT@" not in page
    assert re.findall(rb"url\(([^)]*)\)", page) == [b"#hatch"] * len(re.findall(rb"url\(", page))
    # Every absolute URL in the page is the SVG namespace (an identifier, never fetched).
    assert set(re.findall(r"https?://[^\s\"'<)]+", page.decode())) == {SVG_NS}
    assert snapshot_of(page) is None
    # Labels point at inputs that exist; the lookup form has its fields.
    labels = [value for tag, name, value in parser.attributes if tag == "label" and name == "for"]
    assert labels and set(labels) <= set(parser.ids)
    assert {"ring", "nodes-body", "summary", "transfers", "lookup", "bucket", "key", "status"} <= set(parser.ids)


def test_the_script_references_only_the_page_routes():
    script = page_script(ring_page())
    paths = set(re.findall(r"[\"'](/[a-z][^\"'\s]*)[\"']", script))  # quoted paths; "/" alone joins b/k
    assert paths == set(PAGE_ROUTES), paths
    getelement = set(re.findall(r"\$\(\"([a-z-]+)\"\)", script))
    assert getelement <= set(parse(ring_page()).ids), getelement - set(parse(ring_page()).ids)
    assert "innerHTML" not in script and "eval(" not in script and "document.write" not in script


def test_a_snapshot_is_embedded_as_data_and_cannot_escape_its_script_element():
    hostile = "</script><script>alert(1)</script><!--"
    ring = Ring.initial(["a", hostile], partitions=8, target_n=2)
    snapshot = {"source": "x & y", "taken": "now", "ring": ring_document(ring), "members": None,
                "transfers": [{"partition": 3, "from": hostile}], "lookup": None}
    page = ring_page(snapshot)
    assert page.count(b"<script") == 2 and b"alert(1)</script>" not in page
    assert snapshot_of(page) == snapshot


# ---- the shared summary -----------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.sampled_from([8, 16, 64, 256]), st.integers(1, 4))  # S <= Q: every node owns
def test_ring_summary_matches_the_ownership_report(nodes, partitions, target_n):
    ring = Ring.initial([f"n{i}" for i in range(nodes)], partitions=partitions, target_n=target_n)
    summary, report = ring_summary(ring_document(ring)), ownership_report(ring)
    assert (summary.minimum, summary.maximum) == (report.minimum, report.maximum)
    assert (summary.ideal_low, summary.ideal_high) == (report.ideal_low, report.ideal_high)
    assert len(summary.violated) == report.violations and summary.violations_min == report.violations_min
    assert dict(summary.counts) == dict(report.counts) and summary.balanced == report.balanced


def test_ring_summary_counts_only_owning_nodes_for_balance():
    document = ring_document(Ring.initial(["a", "b"], partitions=8, target_n=2))
    document["nodes"]["joining"] = {"status": "up"}
    summary = ring_summary(document)
    assert summary.nodes == ("a", "b", "joining") and summary.counts["joining"] == 0
    assert (summary.owning, summary.minimum, summary.ideal_low) == (2, 4, 4) and summary.balanced
    with pytest.raises(ValueError):
        ring_summary({"owners": []})


def test_node_letters():
    assert [node_letter(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == \
        ["A", "B", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA"]
    with pytest.raises(ValueError):
        node_letter(-1)


def test_preflist_report_is_the_preference_list():
    ring = Ring.initial([f"n{i}" for i in range(5)], partitions=64)
    down = frozenset({"n1"})
    for partition in range(0, 64, 7):
        preflist = preference_list(ring, partition, 3, down)
        report = preflist_report(preflist, bucket="b", key="k", partitions=64, ring_version=1,
                                 status_of=lambda node: "up")
        assert [(r["node"], r["partition"]) for r in report["primaries"]] == \
            [(r.node, r.partition) for r in preflist.primaries]
        assert [(r["node"], r["partition"], r["fallback_for"]) for r in report["fallbacks"]] == \
            [(r.node, r.partition, r.fallback_for) for r in preflist.fallbacks]
        assert report["targets"] == list(preflist.nodes) and report["down"] == ["n1"]
        assert all(r["status"] == ("down" if r["node"] == "n1" else "up") for r in report["primaries"])
        json.dumps(report)


# ---- the script itself, where a JavaScript engine or a browser is installed ------------------------

NODE = shutil.which("node") or shutil.which("nodejs")
TRANSFERS = {"node": "node1", "ring_version": 1, "next_version": 2, "remaining": 1,
             "moves": [{"partition": 3, "source": "node1", "target": "node2", "state": "active"},
                       {"partition": 9, "source": "node3", "target": "node2", "state": "done"}]}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

_CHECK = """
const ui = require(process.argv[process.argv.length - 1]);
const cases = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = {summaries: cases.rings.map(r => {
  const s = ui.summarise(r);
  return {min: s.min, max: s.max, low: s.idealLow, high: s.idealHigh, violations: s.violations,
          vmin: s.violationsMin, counts: s.counts, nodes: s.nodes, balanced: s.balanced};
}), letters: cases.letters.map(ui.letter), paths: cases.queries.map(ui.lookupPath),
  arcs: cases.rings.map(r => ui.arcPath(0, 1, r.owners.length, 150, 210)),
  moving: cases.transfers.map(t => ui.movingPartitions(t).map(m => m.partition))};
process.stdout.write(JSON.stringify(out));
"""


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_the_script_parses_and_its_helpers_agree_with_ring(tmp_path):
    script = tmp_path / "ring_ui.js"
    script.write_text(page_script(ring_page()))
    subprocess.run([NODE, "--check", str(script)], check=True, timeout=30)
    rng = random.Random(7)
    rings = [ring_document(Ring.initial([f"n{i}" for i in range(s)], partitions=q, target_n=n))
             for s, q, n in ((1, 8, 3), (3, 256, 3), (4, 64, 4), (5, 64, 3), (9, 16, 2), (3, 8, 3))]
    for _ in range(6):  # arbitrary owners, violations included
        q = rng.choice([8, 16, 32])
        owners = [rng.choice("abcd") for _ in range(q)]
        rings.append({"version": 1, "target_n": rng.randint(1, 4), "owners": owners, "nodes": {"zz": {}}})
    queries = [{"bucket": "a b", "key": "k/1?&=%"}, {"bucket": "ü", "key": "x", "n_val": "2"}]
    transfers = [None, [], {"missing": True}, TRANSFERS, [{"partition": 1}, {"partition": "x"}, 5],
                 {"a": 1, "b": [{"partition": 4, "state": "waiting"}]}]
    cases = {"rings": rings, "letters": list(range(60)) + [701, 702], "queries": queries, "transfers": transfers}
    done = subprocess.run([NODE, "-e", _CHECK, str(script)], input=json.dumps(cases), capture_output=True,
                          text=True, check=True, timeout=30)
    out = json.loads(done.stdout)
    for document, got in zip(rings, out["summaries"]):
        want = ring_summary(document)
        assert got["nodes"] == list(want.nodes) and got["counts"] == dict(want.counts)
        assert (got["min"], got["max"], got["low"], got["high"]) == \
            (want.minimum, want.maximum, want.ideal_low, want.ideal_high)
        assert got["violations"] == violated_windows(document["owners"], document["target_n"])
        assert len(got["violations"]) == window_violations(document["owners"], document["target_n"])
        assert got["vmin"] == violations_min(len(document["owners"]), want.owning, want.target_n)
        assert got["balanced"] == want.balanced
    assert out["letters"] == [node_letter(i) for i in cases["letters"]]
    for query, path in zip(queries, out["paths"]):
        route, _, query_string = path.partition("?")
        assert route == "/admin/preflist" and dict(parse_query(query_string)) == query
    assert all(arc.startswith("M0.00,-210.00A210,210 0 0 1 ") and arc.endswith("Z") for arc in out["arcs"])
    assert out["moving"] == [moving_partitions(t) for t in transfers] == [[], [], [], [3], [1], [4]]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
def test_chromium_draws_a_snapshot(tmp_path):
    ring = Ring.initial([f"node{i}" for i in range(1, 6)], partitions=64)
    document = ring_document(ring, {"node5": "down"})
    lookup = preflist_report(preference_list(ring, 17, 3, frozenset({"node5"})), bucket="b", key="k",
                             partitions=64, ring_version=1, status_of=lambda node: "up")
    page = tmp_path / "ring.html"
    page.write_bytes(ring_page({"source": "test", "taken": "now", "ring": document, "members": None,
                                "transfers": TRANSFERS, "lookup": lookup}))
    dom = dump_dom(f"file://{page}", tmp_path)
    assert dom.count('class="arc"') + dom.count('class="arc down"') == 64
    assert dom.count('class="arc down"') == len(ring.partitions_of("node5"))
    nodes_body = re.search(r'<tbody id="nodes-body">(.*?)</tbody>', dom, re.S).group(1)
    assert nodes_body.count("<tr>") == 5 and "<td>E</td><td><span>node5</span></td>" in nodes_body
    assert "b/k → partition 17 of 64" in dom and "next_version: 2 · remaining: 1" in dom
    assert dom.count('class="moving"') == 1 and "1 not done" in dom
    assert "min 12, max 13 partitions per node" in dom


def dump_dom(url: str, tmp_path, budget_ms: int = 3000) -> str:
    """The DOM after the page's script ran, from headless Chromium."""
    done = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-quic", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", f"--virtual-time-budget={budget_ms}",
                           "--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
