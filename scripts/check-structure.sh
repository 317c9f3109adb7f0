#!/usr/bin/env bash
# Checks the workspace's structure rules and lists every violation, one line each; exits 1 if
# there is any:
#   - no `*.rs` file under crates/ outside a `tests/` directory is longer than 600 lines;
#   - no import cycle between the modules of a crate: sibling modules (the top-level modules of
#     `src/`, and the submodules of each module) reference each other through `crate::`,
#     `super::` or `self::` paths without a loop;
#   - warren-api's normal dependencies include neither warren-proto nor warren-runtime (the API
#     only translates; it reaches sandboxes through warren-control).
# Needs python3 and cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import re
import subprocess
import sys
from pathlib import Path

MAX_LINES = 600
API_FORBIDDEN = ("warren-proto", "warren-runtime")

violations = []


def report(line):
    violations.append(line)
    print(line)


# --- file length -------------------------------------------------------------------------------

def check_lengths():
    for path in sorted(Path("crates").rglob("*.rs")):
        if "tests" in path.parts or "target" in path.parts:
            continue
        with path.open(encoding="utf-8", errors="replace") as f:
            lines = sum(1 for _ in f)
        if lines > MAX_LINES:
            report(f"too long: {path}: {lines} lines (at most {MAX_LINES} outside tests/)")


# --- module graph ------------------------------------------------------------------------------

TOKEN = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<line_comment>//[^\n]*)
    | (?P<block_comment>/\*)
    | (?P<raw_string>b?r(?P<hashes>\#*)")
    | (?P<string>b?")
    | (?P<char>b?'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]{1,6}\}|.)|[^\\'\n])')
    | (?P<lifetime>'[A-Za-z_][A-Za-z0-9_]*)
    | (?P<ident>(?:r\#)?[A-Za-z_][A-Za-z0-9_]*)
    | (?P<path_sep>::)
    | (?P<number>[0-9][0-9A-Za-z_.]*)
    | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def tokenize(text):
    """(kind, value, line) for identifiers, `::` and punctuation; comments, strings, chars,
    lifetimes and numbers are dropped."""
    out = []
    pos, line = 0, 1
    while pos < len(text):
        m = TOKEN.match(text, pos)
        kind = m.lastgroup if m.lastgroup != "hashes" else "raw_string"
        start = pos
        if kind == "block_comment":
            depth, i = 1, m.end()
            while depth and i < len(text):
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            pos = i
        elif kind == "raw_string":
            end = text.find('"' + m.group("hashes"), m.end())
            pos = len(text) if end < 0 else end + 1 + len(m.group("hashes"))
        elif kind == "string":
            i = m.end()
            while i < len(text) and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            pos = i + 1
        else:
            pos = m.end()
            if kind == "ident":
                out.append(("ident", m.group().removeprefix("r#"), line))
            elif kind == "path_sep":
                out.append(("::", "::", line))
            elif kind == "punct":
                out.append(("punct", m.group(), line))
        line += text.count("\n", start, pos)
    return out


def module_path(src, path):
    """The module a file defines: src/a/b.rs and src/a/b/mod.rs are ["a", "b"]; the crate roots
    (lib.rs, main.rs) are []."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts and parts[-1] == "mod":
        parts.pop()
    if parts in (["lib"], ["main"]):
        return []
    return parts


def parse_use_tree(toks, i, prefix):
    """Parses a use tree at toks[i]; returns (full paths, index after the tree)."""
    segs = list(prefix)
    if i < len(toks) and toks[i][0] == "::":
        i += 1  # a leading `::` names an extern crate
        segs = ["::"]
    while i < len(toks):
        kind, val, _ = toks[i]
        if kind == "ident" and val != "as":
            segs.append(val)
            i += 1
            if i < len(toks) and toks[i][0] == "::":
                i += 1
                continue
            if i < len(toks) and toks[i][1] == "as":
                i += 2
            return [segs], i
        if val == "*":
            return [segs + ["*"]], i + 1
        if val == "{":
            paths, i = [], i + 1
            while i < len(toks) and toks[i][1] != "}":
                if toks[i][1] == ",":
                    i += 1
                    continue
                sub, i = parse_use_tree(toks, i, segs)
                paths += sub
            return paths, i + 1
        return [segs], i
    return [segs], i


def resolve(here, segs):
    """The absolute module path of `segs` written in module `here`, or None when it does not
    start at crate, self or super (an extern crate, a local item or a child module)."""
    if not segs or segs[0] not in ("crate", "self", "super"):
        return None
    out = [] if segs[0] == "crate" else list(here)
    relative = True  # still in the leading crate/self/super segments
    for i, seg in enumerate(segs):
        if relative and seg == "super":
            if not out:
                return None
            out.pop()
        elif relative and (seg == "self" or (seg == "crate" and i == 0)):
            pass
        else:
            relative = False
            out.append(seg)
    return out


def references(src, path):
    """(module the reference is written in, absolute path it names, line) for every crate-,
    self- or super-relative path in a file, in use trees and in expressions alike."""
    toks = tokenize(path.read_text(encoding="utf-8", errors="replace"))
    base = module_path(src, path)
    inline = []  # (name, brace depth inside it) of the inline `mod name { ... }` around us
    depth = 0
    found = []
    i = 0
    while i < len(toks):
        kind, val, line = toks[i]
        here = base + [name for name, _ in inline]
        if val == "{":
            depth += 1
        elif val == "}":
            if inline and inline[-1][1] == depth:
                inline.pop()
            depth -= 1
        elif kind == "ident" and val == "mod" and i + 2 < len(toks) and toks[i + 2][1] == "{":
            inline.append((toks[i + 1][1], depth + 1))
            depth += 1
            i += 3
            continue
        elif kind == "ident" and val == "use":
            paths, i = parse_use_tree(toks, i + 1, [])
            for segs in paths:
                target = resolve(here, segs)
                if target is not None:
                    found.append((here, target, line))
            continue
        elif (
            kind == "ident"
            and val in ("crate", "self", "super")
            and i + 1 < len(toks)
            and toks[i + 1][0] == "::"
            and not (i > 0 and (toks[i - 1][0] == "::" or toks[i - 1][1] == "$"))
        ):
            segs = [val]
            j = i + 1
            while j + 1 < len(toks) and toks[j][0] == "::" and toks[j + 1][0] == "ident":
                segs.append(toks[j + 1][1])
                j += 2
            target = resolve(here, segs)
            if target is not None:
                found.append((here, target, line))
            i = j
            continue
        i += 1
    modules = {tuple(base + [name for name, _ in inline[:k]]) for k in range(len(inline) + 1)}
    return found, modules


def sccs(graph):
    """Tarjan's strongly connected components of {node: set(successors)}."""
    index, low, on_stack, stack, result = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            result.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def a_cycle(graph, comp):
    """One cycle through the first node of a strongly connected component, as a node list."""
    members, start = set(comp), comp[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph.get(v, ())):
            if w == start:
                return paths[v] + [start]
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return comp + [start]


def check_cycles():
    for src in sorted(Path("crates").glob("*/src")):
        crate = src.parent.name
        files = sorted(p for p in src.rglob("*.rs") if "bin" not in p.relative_to(src).parts[:1])
        refs, modules = [], set()
        for path in files:
            found, mods = references(src, path)
            refs += [(path, here, target, line) for here, target, line in found]
            modules |= mods
        # For each module D, the graph of its child modules: an edge C1 -> C2 when code in C1
        # (or below it) names D::C2 (or something in it). D's own file is not part of it.
        graphs, evidence = {}, {}
        for path, here, target, line in refs:
            k = 0
            while k < len(here) and k < len(target) and here[k] == target[k]:
                k += 1
            if k >= len(here) or k >= len(target):
                continue
            parent = tuple(here[:k])
            if parent + (target[k],) not in modules:
                continue  # an item of the parent, not a module
            edge = (here[k], target[k])
            graphs.setdefault(parent, {}).setdefault(edge[0], set()).add(edge[1])
            evidence.setdefault((parent, edge), f"{path}:{line}")
        for parent, graph in sorted(graphs.items()):
            for comp in sccs(graph):
                if len(comp) < 2:
                    continue
                where = "::".join(["crate", *parent])
                cycle = a_cycle(graph, comp)
                steps = ", ".join(
                    f"{a} -> {b} ({evidence[(parent, (a, b))]})" for a, b in zip(cycle, cycle[1:])
                )
                report(
                    f"import cycle: {crate}: modules of {where} {{{', '.join(comp)}}}: {steps}"
                )


# --- warren-api's dependencies -----------------------------------------------------------------

def check_api_dependencies():
    cmd = ["cargo", "tree", "--locked", "-p", "warren-api", "-e", "normal", "--prefix", "none"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        report(f"cargo tree failed: {' '.join(cmd)}: {out.stderr.strip()}")
        return
    listed = {line.split(" ")[0] for line in out.stdout.splitlines() if line.strip()}
    for name in API_FORBIDDEN:
        if name in listed:
            report(f"forbidden dependency: warren-api depends on {name} (normal dependencies)")


check_lengths()
check_cycles()
check_api_dependencies()
sys.stdout.flush()
if violations:
    print(f"check-structure: {len(violations)} violation(s)", file=sys.stderr)
    sys.exit(1)
print("check-structure: ok", file=sys.stderr)
PY
