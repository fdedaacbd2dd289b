#!/usr/bin/env python3
"""The house rules of issue 14, measured from the source (run by test-all.sh).

- No import circle between the top-level modules of any crate (a module is a
  file `src/x.rs` or a folder `src/x/`; `crate::x::…` in another module is an
  edge to x).
- No crate imports another crate above it: the crates' order is fixed below.
- In the agent, no import runs against the stages' order socket → attest →
  match → cache → authority (a stage may import a stage after it, never one
  before it).
- No Rust file over 600 lines, apart from generated code (proto/src/gen).

Prints the figures (circles, back-edges, largest files) and exits 1 when a rule
is broken.
"""
import os
import re
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 600
GENERATED = ("proto/src/gen/",)
# Lower crates first: a crate may depend only on crates before it.
CRATE_ORDER = ["proto", "token", "plugins", "runtime", "agent", "issuer", "cli", "tests", "bench"]
CRATE_NAMES = {
    "lanyard_proto": "proto", "lanyard_token": "token", "lanyard_plugins": "plugins",
    "lanyard_runtime": "runtime", "lanyard_agent": "agent", "lanyard_issuer": "issuer",
    "lanyard_tests": "tests",
}
# The agent's stages in the order data flows; each maps to its modules.
AGENT_STAGES = [
    ("socket", {"socket"}),
    ("attest", {"attest"}),
    ("match", {"matching"}),
    ("cache", {"cache"}),
    ("authority", {"authority"}),
]


# Re-exported short paths in agent/src/lib.rs, and the stage folder each is in.
AGENT_ALIASES = {"api": "socket", "client": "socket", "health": "socket",
                 "upstream": "authority", "restore": "cache"}


def strip_comments(text):
    return "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))


def crate_imports(text):
    """The top-level modules `crate::…` names in `text`, including grouped ones."""
    out = set()
    text = strip_comments(text)
    for m in re.finditer(r"\bcrate::\{([^}]*)\}", text):
        for part in m.group(1).split(","):
            name = part.strip().split("::")[0].strip()
            if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                out.add(name)
    for m in re.finditer(r"\bcrate::([a-z_][a-z0-9_]*)", text):
        out.add(m.group(1))
    return out


def module_of(src_dir, path):
    rel = os.path.relpath(path, src_dir)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def sccs(graph):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def rust_files(d):
    for dp, dn, fn in os.walk(d):
        dn[:] = [x for x in dn if x != "target"]
        for f in fn:
            if f.endswith(".rs"):
                yield os.path.join(dp, f)


def main():
    failures = []
    # Module circles, per crate (src/ only: tests/tests/*.rs are separate crates).
    for crate in CRATE_ORDER:
        src = os.path.join(ROOT, crate, "src")
        if not os.path.isdir(src):
            continue
        graph = defaultdict(set)
        for f in rust_files(src):
            mod = module_of(src, f)
            if mod in ("lib", "main"):
                continue
            for dep in crate_imports(open(f, encoding="utf-8").read()):
                if dep != mod:
                    graph[mod].add(dep)
        circles = sccs(graph)
        print(f"{crate}: {len(circles)} import circle(s)" + "".join(f"\n  circle: {' <-> '.join(c)}" for c in circles))
        if circles:
            failures.append(f"{crate} has import circles")
        if crate == "agent":
            # The short paths lib.rs re-exports count as the stage they lead to.
            for deps in graph.values():
                for alias, real in AGENT_ALIASES.items():
                    if alias in deps:
                        deps.discard(alias)
                        deps.add(real)
            for stage, mods in AGENT_STAGES:
                for m in mods:
                    if not os.path.isdir(os.path.join(src, m)):
                        failures.append(f"agent stage {stage}: no folder agent/src/{m}/")
            rank = {m: i for i, (_, mods) in enumerate(AGENT_STAGES) for m in mods}
            back = sorted(
                (a, b) for a, deps in graph.items() for b in deps
                if a in rank and b in rank and rank[b] < rank[a]
            )
            print(f"agent: {len(back)} back-edge(s) against socket -> attest -> match -> cache -> authority"
                  + "".join(f"\n  back-edge: {a} imports {b}" for a, b in back))
            if back:
                failures.append("agent stages import against the flow")
    # Crate order, from the Cargo manifests' path dependencies.
    for crate in CRATE_ORDER:
        manifest = os.path.join(ROOT, crate, "Cargo.toml")
        if not os.path.exists(manifest):
            continue
        text = open(manifest, encoding="utf-8").read()
        deps_section = text.split("[dev-dependencies]")[0]
        for name, dep in CRATE_NAMES.items():
            dash = name.replace("_", "-")
            if re.search(rf"^{dash}\s*[=.]", deps_section, re.M) and dep != crate:
                if CRATE_ORDER.index(dep) > CRATE_ORDER.index(crate):
                    failures.append(f"{crate} depends on {dep}, which is above it")
    if not any("above it" in f for f in failures):
        print("crates: every dependency points down " + " <- ".join(CRATE_ORDER))
    # File sizes.
    sizes = []
    for crate in CRATE_ORDER + ["fuzz"]:
        for f in rust_files(os.path.join(ROOT, crate)):
            rel = os.path.relpath(f, ROOT)
            if rel.startswith(GENERATED):
                continue
            sizes.append((sum(1 for _ in open(f, encoding="utf-8")), rel))
    sizes.sort(reverse=True)
    over = [(n, f) for n, f in sizes if n > MAX_LINES]
    print(f"largest files: " + ", ".join(f"{f} {n}" for n, f in sizes[:3]))
    print(f"files over {MAX_LINES} lines: {len(over)}" + "".join(f"\n  {f} {n}" for n, f in over))
    if over:
        failures.append(f"{len(over)} file(s) over {MAX_LINES} lines")
    for f in failures:
        print(f"arch-check: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
