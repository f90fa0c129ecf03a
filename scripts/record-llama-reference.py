#!/usr/bin/env python3
"""Re-records a greedy reference file (../shared/reference/greedy-*.json format) with a llama-server
running on THIS machine, so lmrs can be compared with llama.cpp in one sitting on one CPU.

GGML's kernels differ between CPUs (AVX2 vs AVX-512 quantize and sum activations differently), so
log-probabilities recorded on another machine can differ by more than our tolerance even for
llama.cpp itself. This script replays each case's prompt_ids with greedy sampling and top-5
log-probabilities and writes a file the engine's greedy_reference test can read
(LMRS_SHARED_DIR pointing at a folder with reference/greedy-*.json).

usage: record-llama-reference.py URL REFERENCE.json OUT.json [--retokenize MODEL_NAME]
       (start llama-server -m MODEL -t 2 -fa on -ctxcp 0 --host 127.0.0.1 --port PORT first:
       `-ctxcp 0` because with context checkpoints llama-server evaluates the last 4 prompt tokens of
       sliding-window models (Gemma 3) as a separate batch, which GGML's flash attention computes
       with other kernels than one whole batch)

The file records the CPU kind (`cpu`: avx512, avx2, neon) so a test run elsewhere knows that GGML
rounded differently there.

--retokenize MODEL_NAME records a model that has no reference yet: the prompts (`prompt` texts) of
another model's REFERENCE.json are tokenized by the server (`/tokenize`, special tokens added as the
model's GGUF says, e.g. BOS) instead of replaying its prompt_ids; cases whose prompt holds a FIM
token of that other model (`<|fim_prefix|>`, `<fim_prefix>`, ...) are left out. MODEL_NAME goes into
the file's `model` field.
"""
import json, platform, sys, urllib.request


def cpu_kind():
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        flags = ""
    for kind, flag in [("avx512", " avx512f"), ("avx2", " avx2"), ("neon", " asimd")]:
        if flag in flags:
            return kind
    return platform.machine()

args = sys.argv[1:]
retokenize_as = None
if "--retokenize" in args:
    at = args.index("--retokenize")
    retokenize_as = args[at + 1]
    del args[at:at + 2]
url, reference_path, out_path = args[:3]
reference = json.load(open(reference_path))


def post(path, request):
    http = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(request).encode(),
                                  headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(http, timeout=600))


cases = []
for case in reference["cases"]:
    if retokenize_as is not None:
        if "fim_prefix" in case["prompt"]:
            continue
        tokens = post("/tokenize", {"content": case["prompt"], "add_special": True})["tokens"]
        case = {**case, "prompt_ids": tokens}
    request = {"prompt": case["prompt_ids"], "n_predict": len(case["tokens"]), "temperature": 0,
               "top_k": 1, "n_probs": 5, "cache_prompt": False, "samplers": ["top_k"]}
    answer = post("/completion", request)
    steps = [{"id": p["id"], "logprob": p["logprob"],
              "top": [[t["id"], t["logprob"]] for t in p["top_logprobs"]]}
             for p in answer["completion_probabilities"]]
    cases.append({**case, "tokens": [s["id"] for s in steps], "text": answer["content"], "steps": steps})
    print(case["name"], "ok", file=sys.stderr)
json.dump({"model": retokenize_as or reference["model"],
           "engine": "llama-server on this machine (record-llama-reference.py)", "cpu": cpu_kind(),
           "cases": cases}, open(out_path, "w"))
