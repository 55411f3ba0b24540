#!/usr/bin/env python3
"""Fails on an import back-edge or cycle between the top-level modules of src/.

Reads every `crate::<module>` path in the code of src/ (comments and doc comments are
ignored, so a doc link is not an edge) and checks each edge against LAYERS below: a module
may name only modules of a lower layer. The layer order is the one docs/ARCHITECTURE.md
draws; a new module must be added here. Also reports any cycle, so a same-layer edge
cannot sneak one in. Run by .ci/run; exit 1 on a violation.
"""
import pathlib
import re
import sys

# Lowest first. Modules in one tuple are peers: they must not import each other.
LAYERS = [
    ("model",),
    ("plan",),
    ("store", "mastodon", "journal"),
    ("inventory",),
    ("report",),
    ("pool",),
    ("cert",),
    ("config",),
    ("cli",),
    ("commands",),
]
# Crate-root items that are not modules (macros exported at the root).
ROOT_ITEMS = {"out", "outln"}

rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
# The tree to check: src/ of this repository, or the folder given as the only argument.
src = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent / "src"
path_re = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
brace_re = re.compile(r"\buse\s+crate::\{([^;]*)\}", re.S)

def code_of(text):
    """The text with // comments (incl. doc comments) and string literals removed."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())

edges = {}
errors = []
for f in sorted(src.rglob("*.rs")):
    rel = f.relative_to(src)
    if len(rel.parts) == 1:
        if rel.stem in ("lib", "main"):
            continue
        mod = rel.stem
    else:
        mod = rel.parts[0]
    if mod not in rank:
        errors.append(f"{rel}: module `{mod}` is not in scripts/check-layers.py LAYERS")
        continue
    code = code_of(f.read_text())
    targets = set(path_re.findall(code))
    for group in brace_re.findall(code):
        targets |= {t.strip().split("::")[0] for t in group.split(",") if t.strip()}
    for t in targets - ROOT_ITEMS - {mod, "self", "super"}:
        edges.setdefault(mod, set()).add(t)
        if t not in rank:
            errors.append(f"{rel}: names unknown module `{t}`")
        elif rank[t] >= rank[mod]:
            kind = "peer" if rank[t] == rank[mod] else "back-edge"
            errors.append(f"{rel}: {kind} {mod} -> {t} (layer order in scripts/check-layers.py)")

# Cycle detection over the module graph (independent of the layer table).
state = {}
def visit(m, stack):
    state[m] = 1
    for t in sorted(edges.get(m, ())):
        if state.get(t) == 1:
            errors.append("cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
        elif t not in state:
            visit(t, stack + [t])
    state[m] = 2
for m in sorted(edges):
    if m not in state:
        visit(m, [m])

for e in sorted(set(errors)):
    print(e)
if errors:
    sys.exit(1)
print(f"layers: {sum(len(v) for v in edges.values())} module edges, no back-edge, no cycle")
