#!/usr/bin/env python3
"""Reports import cycles among the modules of one crate's source tree (default: proxy/src).

Usage: scripts/module-cycles.py [SRC_DIR]

Prints every strongly connected component of more than one file, with the references that make
it (file:line and the path as written), and exits 1 if there is any; prints "no cycles" and exits
0 otherwise. Python 3 standard library only.

The graph is built at FILE granularity. Module `a::b` is the file `a/b.rs` (`a/b/mod.rs` is not
used in this repository and not looked for); `lib.rs` is the crate root. `main.rs` is a separate
crate (the binary) that reaches the library as `sidepool::…`, so it is left out.

An edge F -> G means: code in F names an item of module G. References counted:
  * `use` trees starting with `crate::`, `super::`, `self::` or a child module declared in F
    (`use profile::X` next to `mod profile;`), with `{…}` groups, `self` and `*` expanded;
  * the same paths written in code (`crate::route::pick(…)`, `super::Foo`, `health::Probe`).
Comments and string literals are ignored. A path is resolved to the deepest module that is a
file: `crate::pg::client::Login` is an edge to `pg/client.rs` only, `crate::pg::PgService` an
edge to `pg.rs`. Inline modules (`mod tests { use super::*; }`) belong to their file, so their
`super::` resolves from the inline module. A `#[macro_export]` macro named through the crate root
(`crate::pool_service!`) is an edge to the file that defines it, not to `lib.rs`.

Parent and child: a parent DECLARING its children (`mod x;`, `pub mod x;`) is containment, not a
dependency, and makes no edge. A child using its parent's items (`super::X`, `crate::pg::X` from
`pg/client.rs`) is an edge child -> parent; a parent using a child's items (`self::x::Y`,
`x::Y`, `pub use self::x::Y`) is an edge parent -> child. So a parent that re-exports or calls
into a child while that child imports from the parent is a cycle: children import shared items
from the sibling that defines them, not through the parent's re-exports.

One exception, the file split of a type: a child that adds `impl` blocks to a type of its parent
(`use super::Relay; impl Relay { … }`, as `pg/relay/routing.rs` does) is the parent's code in a
second file, not a module with an interface of its own; it is merged into its parent's node
(edges of both count, the edges between them do not) and listed as `parent.rs+child.rs`.
"""

import os
import re
import sys
from collections import defaultdict

TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|::|[{}(),;*$!#\[\].]|\S")


def strip(text):
    """Blanks out comments, string and char literals, keeping newlines (for line numbers)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    out.append("\n" if text[i] == "\n" else "")
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:]) and not (i and text[i - 1].isalnum()):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append("\n" * text.count("\n", i, end) + '""')
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append("\n" * text.count("\n", i, j) + '""')
            i = j + 1
        elif c == "'" and re.match(r"'(\\.[^']*|[^\\'])'", text[i:]):
            i += len(re.match(r"'(\\.[^']*|[^\\'])'", text[i:]).group(0))
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def tokens(text):
    """(token, line) pairs of stripped source."""
    result, line = [], 1
    for m in re.finditer(TOKEN.pattern + r"|\n", text):
        t = m.group(0)
        if t == "\n":
            line += 1
        else:
            result.append((t, line))
    return result


def module_of(rel):
    """`pg/client.rs` -> ('pg', 'client'); `lib.rs` -> ()."""
    parts = rel[:-3].split(os.sep)
    return () if parts == ["lib"] else tuple(parts)


def parse_tree(toks, i):
    """Parses a use tree / path at toks[i]; returns (list of segment lists, next index)."""
    t = toks[i][0]
    if t == "{":
        paths, i = [], i + 1
        while i < len(toks) and toks[i][0] != "}":
            if toks[i][0] == ",":
                i += 1
                continue
            sub, i = parse_tree(toks, i)
            paths += sub
        return paths, i + 1
    if t == "*":
        return [[]], i + 1
    if not re.match(r"[A-Za-z_]", t):
        return [[]], i
    head, i = [t], i + 1
    if i + 1 < len(toks) and toks[i][0] == "::":
        rest, i = parse_tree(toks, i + 1)
        return [head + r for r in rest], i
    return [head], i


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # module tuple -> relative file path
        self.macros = {}  # exported macro name -> module tuple
        for root, _, names in os.walk(src):
            for name in names:
                if name.endswith(".rs"):
                    rel = os.path.relpath(os.path.join(root, name), src)
                    if rel != "main.rs":
                        self.files[module_of(rel)] = rel
        for mod, rel in self.files.items():
            text = strip(open(os.path.join(src, rel), encoding="utf-8").read())
            for m in re.finditer(r"#\[macro_export\]\s*macro_rules!\s*([A-Za-z_]\w*)", text):
                self.macros[m.group(1)] = mod

    def resolve(self, here, children, path):
        """The file module that `path`, written in logical module `here`, names (or None)."""
        if path[0] == "crate":
            base, rest = (), path[1:]
        elif path[0] in ("self", "super"):
            base, rest = here, path
            while rest and rest[0] in ("self", "super"):
                if rest[0] == "super":
                    if not base:
                        return None
                    base = base[:-1]
                rest = rest[1:]
        elif path[0] in children:
            base, rest = here, path
        else:
            return None  # an external crate, a local type, a variant, …
        full = base + tuple(s for s in rest if s != "self")
        if len(full) == 1 and full[0] in self.macros:
            return self.macros[full[0]]
        for k in range(len(full), -1, -1):
            if full[:k] in self.files:
                return full[:k]
        return None

    def references(self, mod):
        """(target module, line, path text) for every reference in file `mod`."""
        rel = self.files[mod]
        toks = tokens(strip(open(os.path.join(self.src, rel), encoding="utf-8").read()))
        children = {
            toks[k + 1][0]
            for k in range(len(toks) - 2)
            if toks[k][0] == "mod" and toks[k + 2][0] == ";"
        }
        inline, depth, pending = [], 0, None
        found, i = [], 0
        while i < len(toks):
            t, line = toks[i]
            prev = toks[i - 1][0] if i else ""
            if t == "mod" and i + 2 < len(toks) and toks[i + 2][0] == "{":
                pending = toks[i + 1][0]
            if t == "{":
                depth += 1
                if pending:
                    inline.append((pending, depth))
                    pending = None
            elif t == "}":
                if inline and inline[-1][1] == depth:
                    inline.pop()
                depth -= 1
            starts_path = (
                prev not in ("::", "$", ".")
                and i + 1 < len(toks)
                and toks[i + 1][0] == "::"
                and (t in ("crate", "self", "super") or (t in children and not inline))
            )
            if starts_path:
                paths, nxt = parse_tree(toks, i)
                here = mod + tuple(name for name, _ in inline)
                for p in paths:
                    target = self.resolve(here, children, p)
                    if target is not None and target != mod:
                        found.append((target, line, "::".join(p)))
                i = nxt
                continue
            i += 1
        return found

    def extends_parent(self, mod):
        """Whether file `mod` adds `impl` blocks to a type it takes from its parent."""
        if not mod:
            return False
        text = strip(open(os.path.join(self.src, self.files[mod]), encoding="utf-8").read())
        names = set()
        for m in re.finditer(r"\buse\s+super::(\{[^}]*\}|\w+)\s*;", text):
            names |= set(re.findall(r"\b[A-Z]\w*", m.group(1)))
        impls = re.findall(r"^impl(?:<[^>]*>)?\s+(?:super::)?([A-Z]\w*)\s*\{", text, re.M)
        return any(t in names for t in impls) or bool(
            re.search(r"^impl(?:<[^>]*>)?\s+super::[A-Z]\w*\s*\{", text, re.M)
        )

    def node(self, mod):
        """The graph node of file `mod`: its own, or its parent's if it extends the parent."""
        while mod[:-1] in self.files and self.extends_parent(mod):
            mod = mod[:-1]
        return mod

    def name(self, node):
        merged = [m for m in self.files if m != node and self.node(m) == node]
        return "+".join([self.files[node]] + sorted(self.files[m] for m in merged))

    def graph(self):
        edges = defaultdict(dict)  # from node -> {to node: (file, line, path)}
        for mod in self.files:
            for target, line, text in self.references(mod):
                a, b = self.node(mod), self.node(target)
                if a != b:
                    edges[a].setdefault(b, (self.files[mod], line, text))
        return edges


def components(nodes, edges):
    """Strongly connected components (Tarjan), each a sorted list."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "proxy", "src"
    )
    crate = Crate(src)
    edges = crate.graph()
    nodes = {crate.node(m) for m in crate.files}
    cycles = [c for c in components(nodes, edges) if len(c) > 1]
    for comp in sorted(cycles):
        members = set(comp)
        print("cycle: " + ", ".join(crate.name(m) for m in comp))
        for a in comp:
            for b, (file, line, text) in sorted(edges[a].items()):
                if b in members:
                    print(f"  {file}:{line} -> {crate.name(b)}  ({text})")
    if cycles:
        print(f"{len(cycles)} import cycle(s) among the modules of {os.path.normpath(src)}")
        return 1
    print(f"no cycles among the modules of {os.path.normpath(src)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
