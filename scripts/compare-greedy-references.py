#!/usr/bin/env python3
"""Compares two greedy reference files (../shared/reference/greedy-*.json format) with the criteria of
engine/tests/greedy_reference.rs: a case is identical when all its tokens match; where it first
differs, the recorded top-2 log-probabilities must be within 0.05 (a near tie); at the matching steps,
the largest |Δ log-probability| of the recorded top-1 token and of the top-5 entries both list.

Use it to see how close llama.cpp itself comes to a recording made on another machine: record this
machine's llama-server with record-llama-reference.py, then compare that file with the original.

usage: compare-greedy-references.py RECORDED.json CANDIDATE.json
"""
import json, sys

recorded, candidate = (json.load(open(p)) for p in sys.argv[1:3])
by_name = {c["name"]: c for c in candidate["cases"]}
identical = near_tie = other = 0
max_top1 = max_top5 = 0.0
for case in recorded["cases"]:
    mine = by_name[case["name"]]
    verdict = "yes"
    for step, (want, got) in enumerate(zip(case["steps"], mine["steps"])):
        want_top, got_top = dict(map(tuple, want["top"])), dict(map(tuple, got["top"]))
        if want["id"] in got_top:
            max_top1 = max(max_top1, abs(got_top[want["id"]] - want_top[want["id"]]))
        for token, logprob in want_top.items():
            if token in got_top:
                max_top5 = max(max_top5, abs(got_top[token] - logprob))
        if want["id"] != got["id"]:
            ranked = sorted(want_top.values(), reverse=True)
            tie = len(ranked) > 1 and ranked[0] - ranked[1] <= 0.05
            verdict = f"{'tie' if tie else 'NO'}@{step}"
            near_tie += tie
            other += not tie
            break
    identical += verdict == "yes"
    print(f"  {case['name']:<28} {verdict}")
n = len(recorded["cases"])
print(f"cases {n}  identical {identical} ({100 * identical / n:.0f}%)  near-tie divergences {near_tie}  "
      f"other divergences {other}  max Δtop1 {max_top1:.4f}  max Δtop5 {max_top5:.4f}")
