"""The layering rules of src/LAYERS.md, checked (scripts/check_code_shape.py).

Reads the three tables of src/LAYERS.md (folders with their headers and what
they may include, confined patterns, exceptions) and returns each break as
"file:line: message":
  - every .c and .h of src/ lies in a folder of the table, every header of
    include/shiftvit/ belongs to exactly one folder;
  - a file includes only headers of its own folder or of the folders it may
    include, and no other folder's internal header;
  - a file calls (or takes the address of) only functions defined in its own
    folder or in one it may include;
  - no cycle of includes between files, no cycle of calls between files, and
    the table itself has no cycle between folders;
  - each confined pattern (MPI, getopt, HDF5, oneDNN, BLIS) only in its folders."""
import glob
import os
import re

LAYERS = 'src/LAYERS.md'
PUBLIC = 'include/shiftvit'


def strip(text):
    """text with comments and string / character literals blanked (newlines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('/*', i):
            j = text.find('*/', i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r'[^\n]', ' ', text[i:j]))
            i = j
        elif text.startswith('//', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
            out.append(' ' * (j - i))
            i = j
        elif c in '"\'':
            j = i + 1
            while j < n and text[j] != c and text[j] != '\n':
                j += 2 if text[j] == '\\' else 1
            # keep the quotes of #include "x.h": the include parser reads them
            # from the raw text, not from this one
            out.append(c + ' ' * (min(j, n) - i - 1) + (c if j < n else ''))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return ''.join(out)


def tables(path):
    """{section title: [row cells]} for each markdown table under a '## ' title."""
    result, title = {}, None
    for line in open(path, encoding='utf-8'):
        if line.startswith('## '):
            title = line[3:].strip()
        elif line.startswith('|') and title:
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            if all(re.fullmatch(r'-+', c) for c in cells):
                continue
            result.setdefault(title, []).append(cells)
    return {k: v[1:] for k, v in result.items()}  # without the header row


def words(cell):
    return [] if cell in ('-', '') else cell.replace('`', '').split()


def read_rules():
    t = tables(LAYERS)
    folders = {}  # name -> (headers, may include)
    for row in t.get('Folders, lowest first', []):
        folders[row[0]] = (words(row[2]), words(row[3]))
    confined = [(row[0], row[1].strip('`'), words(row[2])) for row in t.get('Confined', [])]
    exceptions = {(row[0], row[1].strip('`')) for row in t.get('Exceptions', [])}
    return folders, confined, exceptions


def folder_of_path(path):
    parts = path.split('/')
    return parts[1] if len(parts) == 3 and parts[0] == 'src' else None


def includes(path):
    """(line, header as written) of each #include "..." of path."""
    for k, line in enumerate(open(path, encoding='utf-8')):
        m = re.match(r'\s*#\s*include\s*"([^"]+)"', line)
        if m:
            yield k + 1, m.group(1)


def resolve(path, inc):
    """The file an #include "inc" of path names, or None (not the project's)."""
    local = os.path.normpath(os.path.join(os.path.dirname(path), inc))
    if os.path.exists(local):
        return local
    if os.path.exists(os.path.join('include', inc)):
        return os.path.join('include', inc)
    return None


def top_level(code):
    """Stripped code at file scope: preprocessor lines blanked, every {...}
    body reduced to {}."""
    lines, cont = [], False
    for line in code.split('\n'):
        if cont or line.lstrip().startswith('#'):
            cont = line.rstrip().endswith('\\')
            line = ''
        lines.append(line)
    out, depth = [], 0
    for ch in '\n'.join(lines):
        if ch == '{':
            if depth == 0:
                out.append(ch)
            depth += 1
        elif ch == '}':
            depth -= 1
            if depth == 0:
                out.append(ch)
        elif depth == 0:
            out.append(ch)
    return ''.join(out)


DEFINITION = re.compile(r'([^;{}]*?)\b([A-Za-z_]\w*)\s*\(([^;{}]*)\)\s*'
                        r'(?:__attribute__\s*\(\(.*?\)\)\s*)?\{\}', re.S)


def definitions(path):
    """(name, external) of each function path defines."""
    for m in DEFINITION.finditer(top_level(strip(open(path, encoding='utf-8').read()))):
        words_before = m.group(1).split()
        yield m.group(2), not ({'static', 'LY_INLINE'} & set(words_before)) and m.group(2) != 'main'


def cycles(graph):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check():
    """Every break of the layering, as 'file:line: message' strings."""
    folders, confined, exceptions = read_rules()
    bad, used_exceptions = [], set()
    if not folders:
        return [f'{LAYERS}:1: no folder table found']
    owner = {}  # public header path -> folder
    for f, (headers, may) in folders.items():
        for h in headers:
            p = os.path.join(PUBLIC, h)
            if not os.path.exists(p):
                bad.append(f'{LAYERS}:1: {f} lists {p}, which does not exist')
            if p in owner:
                bad.append(f'{LAYERS}:1: {p} is listed for {owner[p]} and {f}')
            owner[p] = f
        for g in may:
            if g not in folders:
                bad.append(f'{LAYERS}:1: {f} may include {g}, which is not a folder of the table')
    for c in cycles({f: set(m) for f, (_, m) in folders.items()}):
        bad.append(f'{LAYERS}:1: the folders {" -> ".join(c)} may include each other (a cycle)')
    for p in sorted(glob.glob(os.path.join(PUBLIC, '*.h'))):
        if p not in owner:
            bad.append(f'{p}:1: belongs to no folder of {LAYERS} (add it to a Headers cell)')
    src = sorted(glob.glob('src/**/*.[ch]', recursive=True))
    for p in src:
        f = folder_of_path(p)
        if f not in folders:
            bad.append(f'{p}:1: not in a folder of {LAYERS} (src/<folder>/<file>)')
            owner[p] = None
        else:
            owner[p] = f
    files = [p for p in src if owner.get(p)] + [p for p in sorted(glob.glob(os.path.join(PUBLIC, '*.h')))
                                                  if owner.get(p)]

    # includes: folders, internal headers, cycles
    inc_graph = {}
    for p in files:
        f = owner[p]
        for line, inc in includes(p):
            target = resolve(p, inc)
            if target is None:
                continue
            inc_graph.setdefault(p, set()).add(target)
            g = owner.get(target)
            if g is None:
                continue
            internal = not target.startswith(PUBLIC + '/')
            if (p, inc) in exceptions:
                used_exceptions.add((p, inc))
                continue
            if internal and g != f:
                bad.append(f'{p}:{line}: includes {target}, internal to src/{g}/')
            elif g != f and g not in folders[f][1]:
                bad.append(f'{p}:{line}: {f}/ includes {inc} of {g}/; {f}/ may include '
                           f'{" ".join(folders[f][1]) or "nothing"} ({LAYERS})')
    for c in cycles(inc_graph):
        bad.append(f'{c[0]}:1: include cycle: {" -> ".join(c)}')

    # calls: folders and cycles between files
    definer = {}
    for p in files:
        if p.endswith('.c'):
            for name, external in definitions(p):
                if external:
                    definer.setdefault(name, p)
    if definer:
        call = re.compile(r'\b(' + '|'.join(sorted(map(re.escape, definer), key=len, reverse=True)) + r')\b')
    call_graph = {}
    for p in files:
        if not p.endswith('.c') or not definer:
            continue
        f = owner[p]
        code = strip(open(p, encoding='utf-8').read())
        own = {name for name, _ in definitions(p)}  # its static ones shadow others' names
        reported = set()
        for k, line in enumerate(code.split('\n')):
            for m in call.finditer(line):
                target = definer[m.group(1)]
                if target == p or m.group(1) in own:
                    continue
                call_graph.setdefault(p, set()).add(target)
                g = owner[target]
                if g != f and g not in folders[f][1] and (m.group(1), g) not in reported:
                    reported.add((m.group(1), g))
                    bad.append(f'{p}:{k + 1}: {f}/ calls {m.group(1)} of {target}; {f}/ may call '
                               f'{" ".join(folders[f][1]) or "nothing"} ({LAYERS})')
    for c in cycles(call_graph):
        bad.append(f'{c[0]}:1: call cycle: {" -> ".join(c)} call each other')

    # confined patterns
    for what, pattern, only in confined:
        rx = re.compile(pattern)
        for p in files:
            if owner[p] in only:
                continue
            raw = open(p, encoding='utf-8').read()
            code = strip(raw)
            if pattern.startswith('#'):
                code = raw  # an include line: the raw text (its <...> is no string)
                code = '\n'.join(l if l.lstrip().startswith('#') else '' for l in code.split('\n'))
            for k, line in enumerate(code.split('\n')):
                if rx.search(line):
                    bad.append(f'{p}:{k + 1}: {what} outside {" ".join(o + "/" for o in only)}: {line.strip()}')
                    break

    for e in sorted(exceptions - used_exceptions):
        bad.append(f'{LAYERS}:1: the exception {e[0]} -> {e[1]} is no longer needed: remove it')
    return bad
