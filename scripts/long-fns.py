#!/usr/bin/env python3
"""Lists Rust functions longer than a limit (default 80 lines) and files longer than 600 lines.

Usage: scripts/long-fns.py [--max N] [--file-max N] [DIR…]   (default DIR: src)

A function is a line matching `fn NAME` (any visibility, async/const/unsafe) whose body is
found by matching braces from the first `{` after the signature; strings, chars and comments
are skipped so braces inside them do not count. Length is from the `fn` line to the closing
brace, both included. Functions inside `#[cfg(test)]` modules and `tests.rs` files are listed
too, marked `(test)`. A smell detector, not a rule: see STYLE.md ("Sizes as a smell").
"""
import argparse
import os
import re
import sys

FN = re.compile(r'^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+"[^"]*"\s+)?fn\s+([A-Za-z_][A-Za-z0-9_]*)')


def strip(text):
    """The text with comments, strings and char literals blanked (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('//', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
            out.append(' ' * (j - i))
            i = j
        elif text.startswith('/*', i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith('/*', j):
                    depth, j = depth + 1, j + 2
                elif text.startswith('*/', j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r'[^\n]', ' ', text[i:j]))
            i = j
        elif c == 'r' and re.match(r'r#*"', text[i:i + 10]) and not (i and (text[i - 1].isalnum() or text[i - 1] == '_')):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r'[^\n]', ' ', text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == '\\' else 1
            j += 1
            out.append(re.sub(r'[^\n]', ' ', text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{..}', '{'), not a lifetime ('a).
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:
                out.append(' ' * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return ''.join(out)


def functions(path):
    text = open(path, encoding='utf-8').read()
    code = strip(text)
    lines = code.split('\n')
    starts = [sum(len(l) + 1 for l in lines[:k]) for k in range(len(lines))]
    test_from = None
    m = re.search(r'#\[cfg\(test\)\]\s*mod\s+\w+\s*\{', code)
    if m:
        test_from = code.count('\n', 0, m.start())
    for k, line in enumerate(lines):
        fm = FN.match(line)
        if not fm:
            continue
        # The body starts at the first `{` after the signature, unless a `;` comes first
        # (a trait method without a body).
        pos = starts[k] + fm.end()
        brace = code.find('{', pos)
        semi = code.find(';', pos)
        if brace < 0 or (0 <= semi < brace):
            continue
        depth, j = 0, brace
        while j < len(code):
            if code[j] == '{':
                depth += 1
            elif code[j] == '}':
                depth -= 1
                if depth == 0:
                    break
            j += 1
        end = code.count('\n', 0, j)
        is_test = path.endswith('tests.rs') or (test_from is not None and k >= test_from)
        yield fm.group(1), k + 1, end + 1, is_test


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--max', type=int, default=80)
    ap.add_argument('--file-max', type=int, default=600)
    ap.add_argument('dirs', nargs='*', default=['src'])
    args = ap.parse_args()
    files = []
    for d in args.dirs:
        if os.path.isfile(d):
            files.append(d)
            continue
        for root, _, names in os.walk(d):
            files += [os.path.join(root, f) for f in names if f.endswith('.rs')]
    found = 0
    for path in sorted(files):
        n = sum(1 for _ in open(path, encoding='utf-8'))
        if n > args.file_max:
            print(f'{path}: file has {n} lines')
            found += 1
        for name, a, b, is_test in functions(path):
            if b - a + 1 > args.max:
                print(f'{path}:{a}: fn {name} has {b - a + 1} lines{" (test)" if is_test else ""}')
                found += 1
    return 0 if found == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
