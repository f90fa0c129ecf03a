#!/usr/bin/env python3
"""Records llama.cpp's answers on the tiny parity models, for engine/tests/tiny_parity.rs.

For every architecture lmrs's fixtures write (`cargo run --release -p lmrs-fixtures --example
write_tiny -- DIR`: each architecture in each of its parity types, F32 and quantized by GGML), this
starts llama.cpp's own `llama-server` on the file, tokenizes the prompts below with it (special
tokens as the file says, e.g. BOS), and asks for 16 greedy tokens with the top-5 log-probabilities
of every step. One JSON file per architecture is written into OUT (engine/tests/data/tiny-parity by
default); the Rust test regenerates the same files (they are deterministic) and checks that lmrs
tokenizes the prompts into the same ids, picks the same 16 tokens and gives top-5 log-probabilities
within 0.01 of llama.cpp's.

usage: scripts/tiny-parity.py --llama-server BIN [--out DIR] [--arch NAME ...] [--threads N]
"""
import argparse, json, os, platform, socket, subprocess, sys, tempfile, time, urllib.request

PROMPTS = {
    "python": "def quick_sort(items):\n    if len(items) <= 1:\n        return items\n    pivot = items[0]\n    left = [x for x in items if x < pivot]\n",
    "rust": "fn main() {\n    let values = vec![1, 2, 3];\n    for value in values.iter() {\n        println!(\"{}\", value);\n    }\n}\n",
    "javascript": "// Count the words: 42 apples, 7 pears.\nconst total = items.reduce((sum, x) => sum + x, 0);\nfunction greet(name) {\n  return `Hello, ${name}!`;\n}\n",
}
# Long enough (337 tokens with the tiny vocabulary) that generation attends over 512 cache rows,
# where GGML's flash attention splits the cache between threads.
PROMPTS["long"] = PROMPTS["python"] * 7
N_STEPS = 16
N_PROBS = 5
# Flash attention on, as lmrs computes by default. No context checkpoints: with them llama-server
# evaluates the last 4 prompt tokens of sliding-window models (gemma3) as a batch of their own, and
# GGML's flash attention computes batches of 64+ queries in F32 tiles but smaller ones with F16
# accumulation, so the split changes the numbers (by 0.02-0.25 on the tiny gemma3).
SERVER_FLAGS = ["-c", "512", "-np", "1", "--no-warmup", "-fa", "on", "-ctxcp", "0"]


def cpu_kind():
    """The SIMD level GGML's kernels use here: results differ between them (see the Rust test)."""
    flags = ""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        pass
    for kind, flag in [("avx512", " avx512f"), ("avx2", " avx2"), ("neon", " asimd")]:
        if flag in flags:
            return kind
    return platform.machine()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, path, request):
    http = urllib.request.Request(url + path, data=json.dumps(request).encode(),
                                  headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(http, timeout=120))


def record_file(server, path, threads):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([server, "-m", path, "-t", str(threads), "--host", "127.0.0.1",
                             "--port", str(port)] + SERVER_FLAGS, stdout=log, stderr=log)
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                sys.exit(f"llama-server exited on {path}:\n{log.read().decode(errors='replace')[-3000:]}")
            try:
                if json.load(urllib.request.urlopen(url + "/health", timeout=2)).get("status") == "ok":
                    break
            except Exception:
                pass
            if time.time() > deadline:
                sys.exit(f"llama-server did not start on {path}")
            time.sleep(0.2)
        cases = []
        for name, text in PROMPTS.items():
            ids = post(url, "/tokenize", {"content": text, "add_special": True})["tokens"]
            answer = post(url, "/completion", {
                "prompt": ids, "n_predict": N_STEPS, "temperature": 0, "top_k": 1,
                "n_probs": N_PROBS, "cache_prompt": False, "samplers": ["top_k"]})
            steps = [{"id": p["id"], "logprob": p["logprob"],
                      "top": [[t["id"], t["logprob"]] for t in p["top_logprobs"]]}
                     for p in answer["completion_probabilities"]]
            cases.append({"prompt": name, "text": text, "prompt_ids": ids, "tokens": [s["id"] for s in steps],
                          "steps": steps})
        return cases
    finally:
        proc.terminate()
        proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llama-server", required=True)
    parser.add_argument("--out", default="engine/tests/data/tiny-parity")
    parser.add_argument("--arch", action="append", help="only these architectures")
    # The Rust test runs 2 threads too: flash attention over 512+ cache rows splits the rows between
    # threads, and the split changes the rounding.
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    version = subprocess.run([args.llama_server, "--version"], capture_output=True,
                             text=True).stderr.strip().splitlines()
    version = next((line for line in version if line.startswith("version")), "unknown version")
    files_dir = tempfile.mkdtemp(prefix="tiny-parity-")
    command = ["cargo", "run", "--release", "-q", "-p", "lmrs-fixtures", "--example", "write_tiny",
               "--", files_dir]
    for arch in args.arch or []:
        command += ["--arch", arch]
    files = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
    by_arch = {}
    for path in files:
        # tiny-{arch}-{type}-{seed}.gguf
        arch, ggml_type, seed = os.path.basename(path)[len("tiny-"):-len(".gguf")].rsplit("-", 2)
        print(f"{arch} {ggml_type}", file=sys.stderr)
        for case in record_file(args.llama_server, path, args.threads):
            by_arch.setdefault(arch, []).append({"type": ggml_type, "seed": int(seed), **case})
    os.makedirs(args.out, exist_ok=True)
    for arch, cases in by_arch.items():
        out = os.path.join(args.out, f"{arch}.json")
        with open(out, "w") as f:
            json.dump({"arch": arch, "cpu": cpu_kind(),
                       "engine": f"llama-server {version} {' '.join(SERVER_FLAGS)} -t {args.threads}",
                       "cases": cases}, f, indent=None, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
