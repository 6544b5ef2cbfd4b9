#!/usr/bin/env python3
"""Checks the shape rules of the code base (README "Developers"; issues 11
and 25): no file in src/ over 600 lines, no function in src/ over 80 lines, no
test or fuzzer that includes a .c file, and the layering of src/LAYERS.md
(which folder may include and call which, no include or call cycles, MPI only
in src/dist/, options only in src/cli/, HDF5 only in src/io/: scripts/lib/layers.py).
Prints each violation as file:line and exits 1 if there is any.

usage: scripts/check_code_shape.py [--max-file N] [--max-function N]"""
import argparse
import glob
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lib'))
import layers  # noqa: E402


def strip_code(line):
    """The line without string and character literals and // comments."""
    line = re.sub(r'"(\\.|[^"\\])*"' + r"|'(\\.|[^'\\])*'", '""', line)
    return re.sub(r'//.*', '', line)


def functions(path):
    """(name, first line, length) of each function defined at file scope."""
    lines = open(path, encoding='utf-8').read().split('\n')
    depth, start, name, in_comment = 0, None, None, False
    for i, raw in enumerate(lines):
        code = strip_code(raw)
        if in_comment or '/*' in code:  # block comments: drop their text
            out, j = '', 0
            while j < len(code):
                if in_comment:
                    k = code.find('*/', j)
                    if k < 0:
                        j = len(code)
                        break
                    in_comment, j = False, k + 2
                else:
                    k = code.find('/*', j)
                    if k < 0:
                        out += code[j:]
                        break
                    out += code[j:k]
                    in_comment, j = True, k + 2
            code = out
        if depth == 0 and '{' in code and start is None:
            head = ' '.join(lines[max(0, i - 3):i + 1])
            m = re.search(r'(\w+)\s*\([^;{}]*\)\s*(__attribute__\(\(.*\)\)\s*)?\{', head)
            is_data = re.match(r'\s*(static\s+)?(const\s+)?(struct|enum|union|typedef)\b', raw) or '=' in code
            start, name = i, (m.group(1) if m and not is_data else None)
        depth += code.count('{') - code.count('}')
        if depth == 0 and start is not None:
            if name:
                yield name, start + 1, i - start + 1
            start = None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--max-file', type=int, default=600)
    ap.add_argument('--max-function', type=int, default=80)
    a = ap.parse_args()
    bad = []
    for path in sorted(glob.glob('src/*/*.c') + glob.glob('src/*/*.h')):
        text = open(path, encoding='utf-8').read()
        n = text.count('\n')
        if n > a.max_file:
            bad.append(f'{path}:1: {n} lines (at most {a.max_file})')
        if path.endswith('.c'):
            for name, line, length in functions(path):
                if length > a.max_function:
                    bad.append(f'{path}:{line}: {name} is {length} lines (at most {a.max_function})')
    for path in sorted(glob.glob('tests/**/*.c', recursive=True)):
        for k, line in enumerate(open(path, encoding='utf-8')):
            if re.match(r'\s*#\s*include\s*"[^"]*\.c"', line):
                bad.append(f'{path}:{k + 1}: includes a .c file: {line.strip()}')
    bad += layers.check()
    for b in bad:
        print(b)
    print(f'code shape: {len(bad)} violation(s)' if bad else 'code shape: OK')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
