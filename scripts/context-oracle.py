#!/usr/bin/env python3
"""Does the model use project context when the right chunk is shown? An upper bound for retrieval.

For each of repobench's positions (--n 40 --seed 1 over ../shared/eval/repos.txt), builds Qwen's FIM
prompt from the current file (about lmrs's default window: 384 tokens before, 128 after, as lines)
three ways and generates greedily with `lmrs infer --special`:
  none   - the file alone;
  oracle - the definition of the needed name (its line and the 12 after it, from the file that
           defines it) first, in Qwen's repository format;
  module - the defining file's top-level outline (its `def`/`class`/`fn`/`struct`... lines, up to
           ~256 tokens) first, the same way.
and reports exact match and name hit (the name appears in the completed line) for each.

usage: scripts/context-oracle.py [N]   (run from the repository root after a release build;
       LMRS_ORACLE_MODEL=PATH for another model than Qwen2.5-Coder-0.5B)
"""
import json, os, re, subprocess, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'eval'))
import repobench

MODEL = os.path.abspath(os.environ.get('LMRS_ORACLE_MODEL') or os.environ.get('LMRS_MODEL_DIR', 'models') + '/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf')
OUTLINE = re.compile(r'^\s{0,4}(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:def|class|fn|struct|enum|trait|const|static|type|impl|mod)\b|^[A-Z_][A-Z0-9_]+\s*=')

def complete(prompt):
    r = subprocess.run([os.path.abspath('target/release/lmrs'), 'infer', '-m', MODEL, '--special', '--temp', '0', '-n', '40',
                        '-t', '2', '-c', '4096', '-p', prompt], capture_output=True, text=True)
    return r.stdout.split('\n')[0]

def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    repos = [repobench.resolve(l.strip()) for l in open(os.path.join(sys.path[0], 'repos.txt')) if l.strip() and not l.startswith('#')]
    pos = repobench.pick_positions(repos, n, 1)
    defs_by_repo = {}
    score = {k: [0, 0] for k in ('none', 'oracle', 'module')}
    for p in pos:
        repo = p['repo']
        if repo not in defs_by_repo:
            defs_by_repo[repo] = repobench.definitions(repobench.repo_files(repo))
        defs = defs_by_repo[repo]
        lines = open(p['file'], encoding='utf-8').read().split('\n')
        li, col = p['line'], p['col']
        truth = lines[li][col:]
        prefix = '\n'.join(lines[max(0, li - 40):li]) + '\n'
        suffix = '\n' + '\n'.join(lines[li + 1:li + 14]) + '\n'
        rel = os.path.relpath(p['file'], repo)
        name = os.path.basename(repo.rstrip('/'))
        fim = f'<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>{lines[li][:col]}'
        dfile, dline = next(iter(sorted(defs[p['name']].items())))
        dlines = open(dfile, encoding='utf-8').read().split('\n')
        drel = os.path.relpath(dfile, repo)
        chunk = '\n'.join(dlines[dline:dline + 13])
        outline, size = [], 0
        for l in dlines:
            if OUTLINE.match(l) and size < 1000:
                outline.append(l.rstrip()); size += len(l)
        prompts = {
            'none': fim,
            'oracle': f'<|repo_name|>{name}\n<|file_sep|>{drel}\n{chunk}\n<|file_sep|>{rel}\n{fim}',
            'module': f'<|repo_name|>{name}\n<|file_sep|>{drel}\n' + '\n'.join(outline) + f'\n<|file_sep|>{rel}\n{fim}',
        }
        row = {'name': p['name'], 'truth': truth.strip()}
        for k, prompt in prompts.items():
            pred = complete(prompt)
            em = pred.strip() == truth.strip()
            hit = p['name'] in pred
            score[k][0] += em; score[k][1] += hit
            row[k] = pred.strip()[:80]
        print(json.dumps(row), flush=True)
    for k, (em, hit) in score.items():
        print(f'{k:7} exact match {em / len(pos):.3f}  name hit {hit / len(pos):.3f}  ({len(pos)} positions)')

if __name__ == '__main__':
    main()
