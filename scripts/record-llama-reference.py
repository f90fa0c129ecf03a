#!/usr/bin/env python3
"""Re-records a greedy reference file (../shared/reference/greedy-*.json format) with a llama-server
running on THIS machine, so lmrs can be compared with llama.cpp in one sitting on one CPU.

GGML's kernels differ between CPUs (AVX2 vs AVX-512 quantize and sum activations differently), so
log-probabilities recorded on another machine can differ by more than our tolerance even for
llama.cpp itself. This script replays each case's prompt_ids with greedy sampling and top-5
log-probabilities and writes a file the engine's greedy_reference test can read
(LMRS_SHARED_DIR pointing at a folder with reference/greedy-*.json).

usage: record-llama-reference.py URL REFERENCE.json OUT.json
       (start llama-server -m MODEL -t 2 --host 127.0.0.1 --port PORT first)
"""
import json, sys, urllib.request

url, reference_path, out_path = sys.argv[1:4]
reference = json.load(open(reference_path))
cases = []
for case in reference["cases"]:
    request = {"prompt": case["prompt_ids"], "n_predict": len(case["tokens"]), "temperature": 0,
               "top_k": 1, "n_probs": 5, "cache_prompt": False, "samplers": ["top_k"]}
    http = urllib.request.Request(url.rstrip("/") + "/completion", data=json.dumps(request).encode(),
                                  headers={"Content-Type": "application/json"})
    answer = json.load(urllib.request.urlopen(http, timeout=600))
    steps = [{"id": p["id"], "logprob": p["logprob"],
              "top": [[t["id"], t["logprob"]] for t in p["top_logprobs"]]}
             for p in answer["completion_probabilities"]]
    cases.append({**case, "tokens": [s["id"] for s in steps], "text": answer["content"], "steps": steps})
    print(case["name"], "ok", file=sys.stderr)
json.dump({"model": reference["model"], "engine": "llama-server on this machine (record-llama-reference.py)",
           "cases": cases}, open(out_path, "w"))
