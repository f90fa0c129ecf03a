#!/usr/bin/env python3
"""How often project context reaches the name a repobench position needs.

For each of repobench's positions (same selection: --n 40 --seed 1 over ../shared/eval/repos.txt),
copies the repository to a temporary folder with the rest of the line removed, runs
`lmrs complete --workspace` with `LMRS_LOG=lmrs_lsp=debug` and `--context-tokens 256`, and
reports whether the needed name was among the ranked candidates and whether it appears in the
context packed into the prompt.

usage: scripts/context-reach.py   (run from the repository root after a release build)
"""
import json, os, shutil, subprocess, sys, tempfile
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'eval'))
import repobench
repos = [repobench.resolve(l.strip()) for l in open(os.path.join(sys.path[0], 'repos.txt')) if l.strip() and not l.startswith('#')]
pos = repobench.pick_positions(repos, 40, 1)
found = packed = 0
rows = []
for p in pos:
    tmp = tempfile.mkdtemp()
    ws = os.path.join(tmp, os.path.basename(p['repo'].rstrip('/')))
    shutil.copytree(p['repo'], ws, ignore=shutil.ignore_patterns('__pycache__'))
    rel = os.path.relpath(p['file'], p['repo'])
    f = os.path.join(ws, rel)
    lines = open(f, encoding='utf-8').read().split('\n')
    lines[p['line']] = lines[p['line']][:p['col']]
    open(f, 'w', encoding='utf-8').write('\n'.join(lines))
    env = dict(os.environ, LMRS_LOG='lmrs_lsp=debug')
    r = subprocess.run([os.path.abspath('target/release/lmrs'), 'complete', f'{f}:{p["line"]+1}:{p["col"]+1}', '--workspace', ws,
                        '--model', os.path.abspath(os.environ.get('LMRS_MODEL_DIR', 'models') + '/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf'), '--threads', '2',
                        '--context-tokens', '256', '--max-tokens', '1'], capture_output=True, text=True, env=env)
    err = r.stderr
    cand = [l.split('name=')[1].split()[0] for l in err.splitlines() if 'context candidate' in l]
    rank = cand.index(p['name']) + 1 if p['name'] in cand else None
    prompt = err[err.find('prompt='):]
    inprompt = p['name'] in prompt.split('<|file_sep|>' + rel)[0] if '<|file_sep|>' + rel in prompt else False
    found += rank is not None; packed += inprompt
    rows.append((p['name'], rank, inprompt, len(cand)))
    shutil.rmtree(tmp)
for r in rows: print(*r)
print(json.dumps({"n": len(pos), "name_among_candidates": found, "name_in_packed_context": packed}))
