#!/usr/bin/env python3
"""Static checks of the lanyard Helm chart that need no helm binary.

  python3 helm/lanyard/ci/check_chart.py            # run the checks
  python3 helm/lanyard/ci/check_chart.py --table    # print the README values table

Checks:
  1. Chart.yaml and values.yaml parse as YAML (PyYAML when importable, else a
     small parser for the YAML subset values.yaml uses) and Chart.yaml has the
     required fields.
  2. Every `.Values.a.b` path a template uses (also through `$v := .Values.a`
     aliases) exists in values.yaml.
  3. Every values.yaml leaf has a `# --` comment on the line directly above it.
  4. Templates have balanced `{{`/`}}` and balanced if/range/with/define/block
     … end blocks, with else only inside an if/with/range.
  5. The README values table lists exactly the values.yaml leaves, with their
     defaults (regenerate it with --table).
  6. Only when a `helm` binary is found ($HELM or PATH): `helm lint --strict`
     and `helm template` with ci/test-values.yaml, a parse of the rendered agent
     and issuer TOML (Python >= 3.11), and that rendering without the required
     values fails.

Ends with the line "N passed, N failed"; exits 1 if any check failed.
"""

import json
import os
import re
import shutil
import subprocess
import sys

CHART = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import yaml  # type: ignore

    HAVE_PYYAML = True
except ImportError:  # pragma: no cover - depends on the machine
    HAVE_PYYAML = False


# --------------------------------------------------------------------------
# A small YAML-subset parser (fallback when PyYAML is missing): block mappings,
# block sequences of scalars or mappings, flow {} / [] / [a, b], quoted and
# plain scalars, comments. Enough for Chart.yaml and values.yaml.
# --------------------------------------------------------------------------


def _strip_comment(s):
    out, q = [], None
    for i, c in enumerate(s):
        if q:
            out.append(c)
            if c == q:
                q = None
        elif c in "'\"":
            q = c
            out.append(c)
        elif c == "#" and (i == 0 or s[i - 1] in " \t"):
            break
        else:
            out.append(c)
    return "".join(out).rstrip()


def _scalar(s):
    s = s.strip()
    if s == "" or s in ("~", "null"):
        return None
    if s[0] == '"' and s[-1] == '"':
        return json.loads(s)
    if s[0] == "'" and s[-1] == "'":
        return s[1:-1].replace("''", "'")
    if s == "{}":
        return {}
    if s.startswith("[") and s.endswith("]"):
        inner = s[1:-1].strip()
        return [] if not inner else [_scalar(x) for x in inner.split(",")]
    if s in ("true", "false"):
        return s == "true"
    if re.fullmatch(r"-?\d+", s):
        return int(s)
    if re.fullmatch(r"-?\d+\.\d+", s):
        return float(s)
    return s


def mini_yaml(text):
    lines = []
    folded = None
    for raw in text.splitlines():
        if folded is not None:
            # a `>-` / `|` block scalar: take the indented lines as one string
            if raw.strip() == "" or raw.startswith(" " * (folded[0] + 1)):
                folded[1].append(raw.strip())
                continue
            lines[-1] = (lines[-1][0], lines[-1][1] + " " + repr(" ".join(folded[1])))
            folded = None
        s = _strip_comment(raw)
        if not s.strip():
            continue
        ind = len(s) - len(s.lstrip(" "))
        lines.append((ind, s.strip()))
        if s.strip().endswith((": >-", ": >", ": |", ": |-")):
            lines[-1] = (ind, s.strip().rsplit(":", 1)[0] + ":")
            folded = (ind, [])
    if folded is not None:
        lines[-1] = (lines[-1][0], lines[-1][1] + " " + repr(" ".join(folded[1])))
    pos = [0]

    def block(ind):
        if pos[0] >= len(lines):
            return None
        if lines[pos[0]][1].startswith("- ") or lines[pos[0]][1] == "-":
            return seq(lines[pos[0]][0])
        return mapping(lines[pos[0]][0])

    def mapping(ind):
        out = {}
        while pos[0] < len(lines) and lines[pos[0]][0] == ind:
            line = lines[pos[0]][1]
            if line.startswith("- "):
                break
            m = re.match(r"""^("[^"]*"|'[^']*'|[^:]+):(?:\s+(.*))?$""", line)
            if not m:
                raise ValueError("cannot parse line: " + line)
            key = _scalar(m.group(1))
            pos[0] += 1
            rest = m.group(2)
            if rest is None or rest == "":
                if pos[0] < len(lines) and (
                    lines[pos[0]][0] > ind
                    or (lines[pos[0]][0] == ind and lines[pos[0]][1].startswith("- "))
                ):
                    out[key] = block(lines[pos[0]][0])
                else:
                    out[key] = None
            else:
                if rest.startswith("'") and rest.endswith("'") and len(rest) > 1 and rest[1:-1].count("'") == 0:
                    out[key] = rest[1:-1]
                else:
                    out[key] = _scalar(rest)
        return out

    def seq(ind):
        out = []
        while pos[0] < len(lines) and lines[pos[0]][0] == ind and lines[pos[0]][1].startswith("-"):
            item = lines[pos[0]][1][1:].strip()
            if re.match(r"^[A-Za-z0-9_./-]+:(\s|$)", item):
                # a mapping item: re-indent its first key and parse a mapping
                lines[pos[0]] = (ind + 2, item)
                out.append(mapping(ind + 2))
            else:
                pos[0] += 1
                out.append(_scalar(item))
        return out

    return block(0) or {}


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if HAVE_PYYAML:
        return yaml.safe_load(text) or {}
    return mini_yaml(text)


# --------------------------------------------------------------------------
# values.yaml structure with comments (line based: needs no YAML library)
# --------------------------------------------------------------------------


def value_leaves(values_path):
    """[(dotted path, line number, comment line above or None, is_leaf)].

    A key is a leaf unless its value is a nested mapping (a section). A mapping
    with a `# --` comment above it is one documented value (helm-docs style)."""
    with open(values_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    out = []
    stack = []  # (indent, key)
    in_list_at = None
    for i, raw in enumerate(lines):
        s = raw.rstrip()
        if not s.strip() or s.lstrip().startswith("#"):
            continue
        ind = len(s) - len(s.lstrip(" "))
        body = s.strip()
        if in_list_at is not None and ind > in_list_at:
            continue  # inside a list value (items, their keys)
        if in_list_at is not None and ind == in_list_at and body.startswith("- "):
            continue
        in_list_at = None
        m = re.match(r"^([A-Za-z0-9_.-]+):(\s+(.*))?$", body)
        if not m:
            continue
        while stack and stack[-1][0] >= ind:
            stack.pop()
        key = m.group(1)
        path = ".".join([k for _, k in stack] + [key])
        rest = _strip_comment(m.group(3) or "")
        prev = None
        j = i - 1
        if j >= 0 and lines[j].strip().startswith("#"):
            prev = lines[j].strip()
        if rest == "":
            # a section or a block list
            nxt = next((l for l in lines[i + 1 :] if l.strip() and not l.strip().startswith("#")), "")
            n_ind = len(nxt) - len(nxt.lstrip(" "))
            if nxt.strip().startswith("- ") and n_ind >= ind:
                out.append((path, i + 1, prev, True))
                in_list_at = n_ind
                continue
            if n_ind > ind and prev and prev.startswith("# --"):
                # helm-docs convention: a documented mapping is one value
                out.append((path, i + 1, prev, True))
                in_list_at = ind
                continue
            if n_ind > ind:
                out.append((path, i + 1, prev, False))
                stack.append((ind, key))
                continue
        out.append((path, i + 1, prev, True))
    return out


def lookup(values, dotted):
    cur = values
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


# --------------------------------------------------------------------------
# templates
# --------------------------------------------------------------------------

ACTION = re.compile(r"\{\{-?(.*?)-?\}\}", re.S)
OPENERS = ("if", "range", "with", "define", "block")


def template_files():
    d = os.path.join(CHART, "templates")
    for name in sorted(os.listdir(d)):
        if name.endswith((".yaml", ".yml", ".tpl", ".txt")):
            yield os.path.join(d, name)


def check_delimiters(path, text):
    errs = []
    if text.count("{{") != text.count("}}"):
        errs.append(f"{path}: {text.count('{{')} '{{{{' but {text.count('}}')} '}}}}'")
    stack = []
    for m in ACTION.finditer(text):
        body = m.group(1).strip()
        if body.startswith("/*"):
            if not body.endswith("*/"):
                errs.append(f"{path}: unterminated comment near offset {m.start()}")
            continue
        line = text.count("\n", 0, m.start()) + 1
        word = re.match(r"^([a-z]+)\b", body)
        word = word.group(1) if word else ""
        if word in OPENERS:
            stack.append((word, line))
        elif word == "end":
            if not stack:
                errs.append(f"{path}:{line}: `end` without an open block")
            else:
                stack.pop()
        elif word == "else":
            if not stack or stack[-1][0] not in ("if", "with", "range"):
                errs.append(f"{path}:{line}: `else` outside if/with/range")
    for word, line in stack:
        errs.append(f"{path}:{line}: `{word}` is never closed with `end`")
    return errs


def values_refs(text):
    """Dotted .Values paths a template reads, resolving `$v := .Values.x` aliases."""
    refs = set()
    aliases = {}
    for m in ACTION.finditer(text):
        body = m.group(1)
        if body.strip().startswith("/*"):
            continue
        for a in re.finditer(r"(\$[A-Za-z_][A-Za-z0-9_]*)\s*:?=\s*\.Values((?:\.[A-Za-z0-9_]+)+)(?![A-Za-z0-9_(])", body):
            aliases[a.group(1)] = a.group(2)[1:]
        for r in re.finditer(r"(?<![A-Za-z0-9_$])\$?\.Values((?:\.[A-Za-z0-9_]+)+)", body):
            refs.add(r.group(1)[1:])
        for var, base in aliases.items():
            for r in re.finditer(re.escape(var) + r"((?:\.[A-Za-z0-9_]+)+)", body):
                refs.add(base + r.group(1))
    return refs


# --------------------------------------------------------------------------
# README table
# --------------------------------------------------------------------------


def fmt_default(v):
    if isinstance(v, str):
        s = json.dumps(v)
    else:
        s = json.dumps(v, separators=(", ", ": "))
    return "`" + s.replace("|", "\\|") + "`"


def values_table(values):
    rows = ["| Key | Default | Description |", "| --- | --- | --- |"]
    for path, _, comment, leaf in value_leaves(os.path.join(CHART, "values.yaml")):
        if not leaf:
            continue
        _, v = lookup(values, path)
        desc = (comment or "").lstrip("#").strip()
        desc = desc[2:].strip() if desc.startswith("--") else desc
        desc = desc.replace("|", "\\|")
        rows.append(f"| `{path}` | {fmt_default(v)} | {desc} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def find_helm():
    h = os.environ.get("HELM") or shutil.which("helm")
    return h if h and os.access(h, os.X_OK) else None


def check_notes(helm, ci_values):
    """Renders NOTES.txt (which `helm template` skips) through a copy of the
    chart that wraps it in a ConfigMap, and fails on a sentence with a hole
    where a value should be (an empty `kubeletHost` once printed "at :10250")."""
    import tempfile

    errs = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "chart")
        shutil.copytree(CHART, copy)
        shutil.copy(os.path.join(copy, "templates", "NOTES.txt"), os.path.join(copy, "notes.txt"))
        with open(os.path.join(copy, "templates", "notes-render.yaml"), "w") as f:
            f.write('apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-render\ndata:\n'
                    '  notes: |\n{{ tpl (.Files.Get "notes.txt") . | indent 4 }}\n')
        r = subprocess.run([helm, "template", "rel", copy, "-n", "ids", "-f", ci_values,
                            "--show-only", "templates/notes-render.yaml"], capture_output=True, text=True)
        if r.returncode != 0:
            return [f"NOTES.txt did not render: {r.stderr}"]
        notes = r.stdout
        for hole in (" at :", " at ,", "<no value>", "  :", "unix://\n"):
            if hole in notes:
                errs.append(f"NOTES.txt renders {hole!r}:\n{notes}")
        if "kubelet at " not in notes:
            errs.append("the k8s attestor note did not render with ci/test-values.yaml")
    return errs


def main():
    results = []  # (name, [errors])
    quiet = "--table" in sys.argv

    def check(name, errs):
        results.append((name, errs))
        if quiet:
            return
        status = "ok" if not errs else "FAILED"
        print(f"{status}: {name}")
        for e in errs:
            print(f"    {e}")

    chart_path = os.path.join(CHART, "Chart.yaml")
    values_path = os.path.join(CHART, "values.yaml")

    errs = []
    try:
        chart = load_yaml(chart_path)
        for k in ("apiVersion", "name", "version", "appVersion", "type", "kubeVersion", "description"):
            if not chart.get(k):
                errs.append(f"Chart.yaml: {k} is missing")
        if chart.get("apiVersion") != "v2":
            errs.append("Chart.yaml: apiVersion must be v2")
    except Exception as e:  # noqa: BLE001
        errs.append(f"Chart.yaml does not parse: {e}")
    values = {}
    try:
        values = load_yaml(values_path)
        if not isinstance(values, dict):
            errs.append("values.yaml is not a mapping")
    except Exception as e:  # noqa: BLE001
        errs.append(f"values.yaml does not parse: {e}")
    check(f"Chart.yaml and values.yaml parse ({'PyYAML' if HAVE_PYYAML else 'stdlib subset parser'})", errs)

    if quiet:
        if any(e for _, e in results):
            print("\n".join(results[0][1]), file=sys.stderr)
            return 1
        print(values_table(values))
        return 0

    texts = {}
    for p in template_files():
        with open(p, encoding="utf-8") as f:
            texts[os.path.relpath(p, CHART)] = f.read()

    errs = []
    for rel, text in texts.items():
        for ref in sorted(values_refs(text)):
            ok, _ = lookup(values, ref)
            if not ok:
                errs.append(f"{rel}: .Values.{ref} is not in values.yaml")
    n_refs = sum(len(values_refs(t)) for t in texts.values())
    check(f"every .Values path used by the templates exists ({n_refs} references)", errs)

    errs = []
    leaves = [x for x in value_leaves(values_path) if x[3]]
    for path, line, comment, _ in leaves:
        if comment is None:
            errs.append(f"values.yaml:{line}: `{path}` has no comment directly above it")
        elif not comment.startswith("# --"):
            errs.append(f"values.yaml:{line}: `{path}`: the comment above it must start with `# --`")
        ok, _ = lookup(values, path)
        if not ok:
            errs.append(f"values.yaml:{line}: `{path}` not found by the YAML parser")
    check(f"every values.yaml leaf is documented ({len(leaves)} leaves)", errs)

    errs = []
    for rel, text in texts.items():
        errs.extend(check_delimiters(rel, text))
    check(f"template delimiters and blocks balance ({len(texts)} files)", errs)

    errs = []
    readme = os.path.join(CHART, "README.md")
    try:
        with open(readme, encoding="utf-8") as f:
            text = f.read()
        want = values_table(values)
        if want not in text:
            errs.append("README.md's values table differs from values.yaml: regenerate it with "
                        "`python3 helm/lanyard/ci/check_chart.py --table`")
    except OSError as e:
        errs.append(f"README.md: {e}")
    check("README values table matches values.yaml", errs)

    helm = find_helm()
    if helm:
        ci_values = os.path.join(CHART, "ci", "test-values.yaml")
        errs = []
        r = subprocess.run([helm, "lint", CHART, "--strict", "-f", ci_values], capture_output=True, text=True)
        if r.returncode != 0:
            errs.append("helm lint --strict failed:\n" + r.stdout + r.stderr)
        r = subprocess.run([helm, "template", "rel", CHART, "-n", "ids", "-f", ci_values],
                           capture_output=True, text=True)
        if r.returncode != 0:
            errs.append("helm template failed:\n" + r.stderr)
        elif HAVE_PYYAML:
            docs = [d for d in yaml.safe_load_all(r.stdout) if d]
            kinds = sorted({d["kind"] for d in docs})
            for want in ("ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "Deployment",
                         "PersistentVolumeClaim", "Service", "ServiceAccount"):
                if want not in kinds:
                    errs.append(f"helm template rendered no {want}")
            try:
                import tomllib  # Python >= 3.11

                for d in docs:
                    if d["kind"] == "ConfigMap":
                        for key, val in (d.get("data") or {}).items():
                            if key.endswith(".toml"):
                                try:
                                    tomllib.loads(val)
                                except tomllib.TOMLDecodeError as e:
                                    errs.append(f"{d['metadata']['name']}/{key} is not valid TOML: {e}")
            except ImportError:
                pass
        # Rendering without the required values must fail, naming them.
        r = subprocess.run([helm, "template", "rel", CHART], capture_output=True, text=True)
        if r.returncode == 0 or "required" not in r.stderr:
            errs.append("helm template without orgPublicKey/clusterName/chainSecret/jwks did not fail")
        # Replicas > 1 on SQLite must fail.
        r = subprocess.run([helm, "template", "rel", CHART, "-f", ci_values, "--set", "issuer.replicas=2"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            errs.append("issuer.replicas=2 without PostgreSQL rendered")
        check(f"helm lint + helm template ({helm})", errs)
        check("NOTES.txt renders every value it names", check_notes(helm, ci_values))
    else:
        print("skip: no helm binary ($HELM or PATH): helm lint / helm template not run")

    failed = sum(1 for _, e in results if e)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
