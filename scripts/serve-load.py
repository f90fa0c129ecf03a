#!/usr/bin/env python3
"""Load a running `lmrs serve` (or llama-server) with concurrent /infill clients.

C clients each send R /infill requests one after another (Python standard library only). Each
request completes a different position of a small built-in corpus, so prompts share prefixes the
way an editor's do. Reports the answers by HTTP status (503 = the queue was full: deliberate),
p50/p95/max latency of the 200s, requests and generated tokens per second, and, at the end, the
server's /metrics gauges (busy slots and queue length must be back at 0: no slot leaked).

With --disconnect-every K, every K-th request of each client is abandoned after --disconnect-after
seconds (the socket is closed mid-request), which must cancel its generation on the server.

    scripts/serve-load.py --url http://127.0.0.1:8012 --clients 8 --requests 100 --n-predict 16
"""

import argparse
import http.client
import json
import socket
import statistics
import sys
import threading
import time
import urllib.parse

CORPUS = '''import os
import sys


def read_lines(path):
    """Return the lines of a text file without their newlines."""
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\\n") for line in handle]


def count_words(lines):
    counts = {}
    for line in lines:
        for word in line.split():
            counts[word] = counts.get(word, 0) + 1
    return counts


def top_words(counts, n=10):
    return sorted(counts.items(), key=lambda item: item[1], reverse=True)[:n]


class Report:
    def __init__(self, title):
        self.title = title
        self.rows = []

    def add(self, name, value):
        self.rows.append((name, value))

    def render(self):
        width = max((len(name) for name, _ in self.rows), default=0)
        out = [self.title, "=" * len(self.title)]
        for name, value in self.rows:
            out.append(f"{name.ljust(width)}  {value}")
        return "\\n".join(out)


def main(argv):
    if len(argv) < 2:
        print("usage: words FILE", file=sys.stderr)
        return 2
    lines = read_lines(argv[1])
    report = Report(os.path.basename(argv[1]))
    for word, count in top_words(count_words(lines)):
        report.add(word, count)
    print(report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''


def positions(count):
    """`count` cursor positions spread over the corpus, each at a line's first non-blank."""
    lines = CORPUS.split("\n")
    starts = []
    offset = 0
    for line in lines:
        if line.strip():
            starts.append(offset + len(line) - len(line.lstrip()))
        offset += len(line) + 1
    return [starts[(i * 7) % len(starts)] for i in range(count)]


def infill_body(cursor, n_predict):
    line_start = CORPUS.rfind("\n", 0, cursor) + 1
    return {
        "input_prefix": CORPUS[:line_start],
        "input_suffix": CORPUS[cursor:],
        "prompt": CORPUS[line_start:cursor],
        "input_extra": [{"filename": "util.py", "text": "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n"}],
        "n_predict": n_predict,
        "n_indent": cursor - line_start,
        "temperature": 0,
        "top_k": 40,
        "top_p": 0.99,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True,
        "t_max_prompt_ms": 5000,
        "t_max_predict_ms": 5000,
    }


class Results:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_status = {}
        self.latencies = []
        self.tokens = 0
        self.cached = 0
        self.evaluated = 0
        self.disconnected = 0

    def add(self, status, latency=None, answer=None):
        with self.lock:
            self.by_status[status] = self.by_status.get(status, 0) + 1
            if latency is not None and status == 200:
                self.latencies.append(latency)
            if answer:
                self.tokens += answer.get("tokens_predicted", 0)
                timings = answer.get("timings", {})
                self.cached += timings.get("cache_n", 0)
                self.evaluated += timings.get("prompt_n", 0)


def headers(api_key):
    h = {"Content-Type": "application/json"}
    if api_key:
        h["Authorization"] = f"Bearer {api_key}"
    return h


def one_request(url, body, api_key, timeout):
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)
    try:
        started = time.perf_counter()
        conn.request("POST", "/infill", json.dumps(body), headers(api_key))
        response = conn.getresponse()
        data = response.read()
        latency = time.perf_counter() - started
        answer = None
        if response.status == 200:
            answer = json.loads(data)
        return response.status, latency, answer
    finally:
        conn.close()


def abandoned_request(url, body, api_key, after):
    """Sends the request and closes the socket `after` seconds later, before the answer."""
    payload = json.dumps(body).encode()
    head = [f"POST /infill HTTP/1.1", f"Host: {url.hostname}:{url.port}", f"Content-Length: {len(payload)}"]
    head += [f"{k}: {v}" for k, v in headers(api_key).items()]
    with socket.create_connection((url.hostname, url.port or 80)) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        time.sleep(after)


def client(index, args, url, results, cursors):
    for r in range(args.requests):
        body = infill_body(cursors[(index * args.requests + r) % len(cursors)], args.n_predict)
        if args.disconnect_every and (r + 1) % args.disconnect_every == 0:
            abandoned_request(url, body, args.api_key, args.disconnect_after)
            with results.lock:
                results.disconnected += 1
            continue
        try:
            status, latency, answer = one_request(url, body, args.api_key, args.timeout)
            results.add(status, latency, answer)
        except (OSError, http.client.HTTPException) as error:
            results.add(f"error: {type(error).__name__}")


def metrics(url, api_key):
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
    conn.request("GET", "/metrics", headers=headers(api_key))
    text = conn.getresponse().read().decode()
    conn.close()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values


class RssSampler:
    """Samples a process's VmRSS (KiB) every half second on a thread of its own."""

    def __init__(self, pid):
        self.pid = pid
        self.samples = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def sample(self):
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        self.samples.append(int(line.split()[1]))
        except OSError:
            pass

    def run(self):
        while not self.done.wait(0.5):
            self.sample()

    def stop(self):
        self.sample()
        self.done.set()
        self.thread.join()


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8012")
    parser.add_argument("--clients", "-c", type=int, default=8)
    parser.add_argument("--requests", "-r", type=int, default=10, help="requests per client")
    parser.add_argument("--n-predict", type=int, default=16)
    parser.add_argument("--api-key")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--disconnect-every", type=int, default=0, help="abandon every K-th request (0: never)")
    parser.add_argument("--disconnect-after", type=float, default=0.2, help="seconds before abandoning")
    parser.add_argument("--server-pid", type=int, help="sample this process's resident memory (Linux /proc) during the run")
    args = parser.parse_args()
    url = urllib.parse.urlparse(args.url)

    results = Results()
    cursors = positions(args.clients * args.requests)
    rss = RssSampler(args.server_pid) if args.server_pid else None
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i, args, url, results, cursors)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if rss:
        rss.stop()

    ok = results.by_status.get(200, 0)
    print(f"clients {args.clients} x requests {args.requests}, n_predict {args.n_predict}: {wall:.1f} s")
    print("answers by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(results.by_status.items(), key=str)))
    if results.disconnected:
        print(f"abandoned mid-request: {results.disconnected}")
    if results.latencies:
        print(
            f"latency (200s): p50 {percentile(results.latencies, 50) * 1e3:.0f} ms, "
            f"p95 {percentile(results.latencies, 95) * 1e3:.0f} ms, max {max(results.latencies) * 1e3:.0f} ms, "
            f"mean {statistics.mean(results.latencies) * 1e3:.0f} ms"
        )
    print(f"throughput: {ok / wall:.2f} requests/s, {results.tokens / wall:.1f} generated tokens/s")
    if results.cached + results.evaluated:
        print(f"prompt tokens reused from a slot's cache: {results.cached} of {results.cached + results.evaluated}")

    # The server settles: cancelled generations stop within a token; give it a moment.
    deadline = time.time() + 30
    while True:
        gauges = metrics(url, args.api_key)
        busy = gauges.get("lmrs_slots_busy")
        queued = gauges.get("lmrs_queue_length")
        if (busy == 0 and queued == 0) or busy is None or time.time() > deadline:
            break
        time.sleep(0.1)
    print(
        f"after the run: busy slots {busy}, queue length {queued}, "
        f"cancelled generations {gauges.get('lmrs_generations_cancelled_total')}, "
        f"503s {gauges.get('lmrs_requests_rejected_queue_full_total')}"
    )
    if rss and rss.samples:
        mib = [kib / 1024 for kib in rss.samples]
        quarter = max(1, len(mib) // 4)
        print(
            f"server RSS: start {mib[0]:.0f} MiB, first quarter max {max(mib[:quarter]):.0f} MiB, "
            f"last quarter max {max(mib[-quarter:]):.0f} MiB, peak {max(mib):.0f} MiB ({len(mib)} samples)"
        )
    unexpected = {k: v for k, v in results.by_status.items() if k not in (200, 503)}
    leaked = busy not in (0, None) or queued not in (0, None)
    if unexpected or leaked:
        print("FAILED: " + (f"unexpected answers {unexpected} " if unexpected else "") + ("slots leaked" if leaked else ""))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
