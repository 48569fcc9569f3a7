#!/usr/bin/env python3
"""Generate a large, realistic-looking source tree for build benchmarks.

Usage: gen-tree.py DEST_DIR [--files N] [--mb M] [--seed S]

The tree is fully determined by (N, M, S) except for file contents, which are random bytes from
the kernel (os.urandom: incompressible, and no two generated files share a chunk by accident).

Shape (counts scale with N, the number of regular files; bytes scale with M, the target total):
  directories   about N/15, nested up to 8 levels below a few rootfs-like top dirs (usr, opt, ...);
                a handful are left empty
  regular files N in total:
    1%     empty
    73%    small:  64 B .. 32 KiB, log-uniform        (config, scripts, headers, .pyc, ...)
    21.5%  medium: 32 KiB .. 256 KiB, log-uniform     (libraries, assets)
    0.4%   large:  1 MiB .. 16 MiB, log-uniform       (big .so, archives, models)
    2 huge files take whatever is left of the M MB budget, split 40/60 (a few hundred MB each
           at the default N=40000, M=2500)
    2.5%   exact copies of earlier small/medium/large files (file-level duplicates)
    ~0.05% (at least 2) "versions" of large files: the first k MiB are copied from another large
           file, the rest is new (chunk-level duplicates at a 1 MiB chunk size)
    10% of files are mode 0755, the rest 0644
  hardlinks     0.25% of N, to earlier regular files
  symlinks      2% of N: most relative links to files or directories in the tree, some absolute
                links that dangle (as in container images)
A file STAMP in DEST_DIR's parent records the parameters and totals once generation completed.
"""
import argparse
import json
import math
import os
import random
import sys
import time

TOP = ['usr', 'opt', 'etc', 'var', 'srv', 'app', 'home']
WORDS = ['lib', 'share', 'bin', 'include', 'python3', 'site-packages', 'node_modules', 'locale',
         'doc', 'man', 'x86_64-linux-gnu', 'src', 'dist', 'test', 'tests', 'data', 'assets',
         'static', 'config', 'plugins', 'modules', 'vendor', 'core', 'utils', 'internal', 'pkg',
         'cache', 'templates', 'fonts', 'icons', 'zoneinfo', 'certs', 'examples', 'build']
EXTS = ['', '.py', '.pyc', '.so', '.h', '.c', '.txt', '.json', '.js', '.mo', '.gz', '.conf',
        '.xml', '.html', '.css', '.png', '.md', '.a', '.jar', '.whl', '.bin', '.dat']
PIECE = 4 << 20


def log_uniform(rng, lo, hi):
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def write_random(path, size):
    with open(path, 'wb') as f:
        left = size
        while left > 0:
            n = min(PIECE, left)
            f.write(os.urandom(n))
            left -= n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('dest')
    ap.add_argument('--files', type=int, default=40000)
    ap.add_argument('--mb', type=int, default=2500)
    ap.add_argument('--seed', type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    n = a.files
    budget = a.mb << 20
    os.makedirs(a.dest)
    started = time.time()

    # Directories: grow a tree, preferring to hang new directories below shallow ones.
    dirs = [('', 0)]
    for top in TOP:
        os.mkdir(os.path.join(a.dest, top))
        dirs.append((top, 1))
    used_names = set(d for d, _ in dirs)
    for _ in range(max(len(TOP), n // 15) - len(TOP)):
        while True:
            parent, depth = rng.choice(dirs[1:])
            if depth < 8 and rng.random() < 1.0 / depth ** 0.5:
                break
        name = rng.choice(WORDS) if rng.random() < 0.5 else rng.choice(WORDS) + '-' + '%x' % rng.getrandbits(20)
        rel = parent + '/' + name
        if rel in used_names:
            continue
        used_names.add(rel)
        os.mkdir(os.path.join(a.dest, rel))
        dirs.append((rel, depth + 1))
    file_dirs = [d for d, _ in dirs[1:]]
    empty_dirs = set(rng.sample(file_dirs, min(10, len(file_dirs) // 50)))
    file_dirs = [d for d in file_dirs if d not in empty_dirs]

    def new_path():
        while True:
            d = rng.choice(file_dirs)
            name = '%s%s' % (rng.choice(['', 'lib', 'test_', 'mod', '_']) + '%x' % rng.getrandbits(32), rng.choice(EXTS))
            rel = d + '/' + name
            if rel not in used_names:
                used_names.add(rel)
                return rel

    # Plan the sizes.
    n_empty = n // 100
    n_dup = n * 25 // 1000
    n_large = max(1, n * 4 // 1000)
    n_version = max(2, n // 2000)
    n_huge = 2
    n_medium = n * 215 // 1000
    n_small = n - n_empty - n_dup - n_large - n_version - n_huge - n_medium
    plan = [('empty', 0)] * n_empty
    plan += [('small', log_uniform(rng, 64, 32 << 10)) for _ in range(n_small)]
    plan += [('medium', log_uniform(rng, 32 << 10, 256 << 10)) for _ in range(n_medium)]
    plan += [('large', log_uniform(rng, 1 << 20, 16 << 20)) for _ in range(n_large)]
    rng.shuffle(plan)
    planned = sum(s for _, s in plan)
    left = max(0, budget - planned - n_dup * (48 << 10) - n_version * (5 << 20))  # expected copies
    huge = [left * 4 // 10, left - left * 4 // 10]

    totals = {'files': 0, 'bytes': 0, 'dirs': len(dirs), 'symlinks': 0, 'hardlinks': 0,
              'duplicates': 0, 'versions': 0, 'huge': []}
    written = []  # (rel, kind, size)

    def add(rel, kind, size):
        totals['files'] += 1
        totals['bytes'] += size
        if rng.random() < 0.1:
            os.chmod(os.path.join(a.dest, rel), 0o755)
        written.append((rel, kind, size))

    for i, (kind, size) in enumerate(plan):
        rel = new_path()
        write_random(os.path.join(a.dest, rel), size)
        add(rel, kind, size)
        if i == len(plan) // 3 or i == 2 * len(plan) // 3:
            size = huge.pop(0)
            rel = new_path()
            write_random(os.path.join(a.dest, rel), size)
            add(rel, 'huge', size)
            totals['huge'].append(size)
    while huge:
        size = huge.pop(0)
        rel = new_path()
        write_random(os.path.join(a.dest, rel), size)
        add(rel, 'huge', size)
        totals['huge'].append(size)

    # File-level duplicates: byte-for-byte copies of earlier files.
    sources = [w for w in written if w[1] in ('small', 'medium', 'large') and w[2] > 0]
    for _ in range(n_dup):
        src, kind, size = rng.choice(sources)
        rel = new_path()
        with open(os.path.join(a.dest, src), 'rb') as fi, open(os.path.join(a.dest, rel), 'wb') as fo:
            fo.write(fi.read())
        add(rel, 'dup', size)
        totals['duplicates'] += 1

    # Chunk-level duplicates: a new version of a large file shares its first k MiB.
    larges = [w for w in written if w[1] == 'large' and w[2] >= 2 << 20]
    for _ in range(n_version if larges else 0):
        src, _, size = rng.choice(larges)
        k = rng.randint(1, size >> 20)
        extra = log_uniform(rng, 64 << 10, 8 << 20)
        rel = new_path()
        with open(os.path.join(a.dest, src), 'rb') as fi, open(os.path.join(a.dest, rel), 'wb') as fo:
            fo.write(fi.read(k << 20))
            fo.write(os.urandom(extra))
        add(rel, 'version', (k << 20) + extra)
        totals['versions'] += 1

    # Hardlinks to earlier regular files.
    regular = [w for w in written if w[1] != 'huge']
    for _ in range(n // 400):
        src = rng.choice(regular)[0]
        rel = new_path()
        os.link(os.path.join(a.dest, src), os.path.join(a.dest, rel))
        totals['hardlinks'] += 1

    # Symlinks: relative to files and directories, plus some dangling absolute ones.
    for _ in range(n // 50):
        rel = new_path()
        r = rng.random()
        if r < 0.7:
            target = os.path.relpath(rng.choice(written)[0], os.path.dirname(rel))
        elif r < 0.9:
            target = os.path.relpath(rng.choice(file_dirs), os.path.dirname(rel))
        else:
            target = '/usr/lib/x86_64-linux-gnu/lib%x.so.1' % rng.getrandbits(24)
        os.symlink(target, os.path.join(a.dest, rel))
        totals['symlinks'] += 1

    totals['seconds'] = round(time.time() - started, 1)
    json.dump(totals, sys.stdout)
    print()


if __name__ == '__main__':
    main()
