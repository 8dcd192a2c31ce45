"""`dlforge serve` against a minimal FastAPI app over the reference library, over HTTP on loopback, same model.

    python bench/serve_http.py generate [--run RUN] [--rounds 10] [--tokens 64] [--json]
    python bench/serve_http.py embed [--rounds 10] [--clients 16] [--requests 4] [--json]

generate: the char GPT (a `gpt` run with the `gpt-shakespeare-char` recipe; without --run, one is trained for 60
steps: speed does not depend on how well it writes) served by `dlforge serve`, against the same weights exported to
GPT-2 format (`dlforge lm export-gpt2`) in transformers' text-generation pipeline behind FastAPI (a sync route in
FastAPI's thread pool, streamed with TextIteratorStreamer). Greedy, `--tokens` new tokens from "ROMEO:"; 1 and 4
clients at once. Per round: time to the first token (median over the clients) and tokens per second (all clients'
tokens over the wall time). Target: tokens/s ratio >= 1.5 at 4 clients.

embed: all-MiniLM-L6-v2 in `dlforge serve` (/v1/embeddings) against sentence-transformers' `encode` behind FastAPI;
`--clients` threads each send `--requests` requests of one Debian FAQ paragraph. Requests per second. Target >= 1.

Both servers run in this process (uvicorn threads), one at a time, in alternating order each round; the ratio is
dlforge's figure over the baseline's (above 1: dlforge is better; for time to first token, the baseline's time
over dlforge's).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

PROMPT = "ROMEO:"


def client() -> httpx.Client:
    """An HTTP client with Nagle's algorithm off, as latency-minded clients do: with it on, a request sent in two
    writes waits for the server's delayed ACK (about 40 ms on Linux) and that, not the server, would be measured."""
    return httpx.Client(timeout=120, transport=httpx.HTTPTransport(
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]))


class Server:
    def __init__(self, app):
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


def baseline_generate_app(folder: Path):
    """transformers' pipeline behind FastAPI: POST /v1/completions {prompt, max_tokens}, streamed."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from transformers import AutoTokenizer, TextIteratorStreamer, pipeline

    tok = AutoTokenizer.from_pretrained(folder)
    pipe = pipeline("text-generation", model=str(folder), tokenizer=tok, device="cpu")
    app = FastAPI()

    @app.post("/v1/completions")
    def complete(body: dict) -> StreamingResponse:
        streamer = TextIteratorStreamer(tok, skip_prompt=True)
        kwargs = {"max_new_tokens": body["max_tokens"], "min_new_tokens": body["max_tokens"], "do_sample": False,
                  "streamer": streamer}
        threading.Thread(target=pipe, args=(body["prompt"],), kwargs=kwargs, daemon=True).start()
        return StreamingResponse((f"data: {json.dumps({'choices': [{'text': t}]})}\n\n" for t in streamer),
                                 media_type="text/event-stream")

    return app


def stream_once(c: httpx.Client, url: str, model: str, tokens: int) -> tuple[float, int]:
    """(time to the first text, pieces of text) of one streamed completion."""
    start, first, pieces = time.perf_counter(), None, 0
    body = {"model": model, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True}
    with c.stream("POST", f"{url}/v1/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0].get("text"):
                pieces += 1
                first = first if first is not None else time.perf_counter() - start
    return first or float("nan"), pieces


def generation_round(clients: list[httpx.Client], url: str, model: str, tokens: int) -> dict[str, float]:
    """All `clients` (made beforehand: making one costs tens of ms) stream a completion at once."""
    start = time.perf_counter()
    with ThreadPoolExecutor(len(clients)) as pool:
        results = list(pool.map(lambda c: stream_once(c, url, model, tokens), clients))
    wall = time.perf_counter() - start
    return {"ttft_s": statistics.median(r[0] for r in results), "tokens_per_s": len(clients) * tokens / wall}


def bench_generate(args: argparse.Namespace) -> dict:
    from dlforge.deploy.serve.app import ServeOptions, create_app
    from dlforge.deploy.serve.served import load_served
    from dlforge.llm.gpt2 import export_gpt2

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    run = args.run
    if run is None:
        from dlforge.api import train

        run = train("gpt-shakespeare-char", ["model.name=gpt", "train.max_steps=60", "train.progress=false",
                                             "train.tensorboard=false", "train.eval_every=60",
                                             "train.checkpoint_every=null"], run_dir=tmp / "runs" / "char").run_dir
    folder = export_gpt2(run, tmp / "gpt2")
    served = load_served(str(run))
    ours = Server(create_app([served], ServeOptions(log=lambda _: None, batch_wait_s=0.01)))
    theirs = Server(baseline_generate_app(folder))
    out: dict = {"run": str(run), "tokens": args.tokens, "rounds": args.rounds, "clients": {}}
    try:
        for c in args.clients:
            clients = [client() for _ in range(c)]
            for server, name in ((ours, served.id), (theirs, "gpt2")):
                generation_round(clients, server.url, name, 8)  # warm: connections open
            rows = {"dlforge": [], "baseline": []}
            for r in range(args.rounds):
                order = [("dlforge", ours, served.id), ("baseline", theirs, "gpt2")]
                for key, server, name in (order if r % 2 == 0 else order[::-1]):
                    rows[key].append(generation_round(clients, server.url, name, args.tokens))
            for each in clients:
                each.close()
            tps = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(rows["dlforge"], rows["baseline"],
                                                                          strict=True)]
            ttft = [b["ttft_s"] / a["ttft_s"] for a, b in zip(rows["dlforge"], rows["baseline"], strict=True)]
            out["clients"][str(c)] = {
                "dlforge_tokens_per_s": statistics.median(x["tokens_per_s"] for x in rows["dlforge"]),
                "baseline_tokens_per_s": statistics.median(x["tokens_per_s"] for x in rows["baseline"]),
                "dlforge_ttft_ms": 1000 * statistics.median(x["ttft_s"] for x in rows["dlforge"]),
                "baseline_ttft_ms": 1000 * statistics.median(x["ttft_s"] for x in rows["baseline"]),
                "tokens_per_s_ratio": statistics.median(tps), "tokens_per_s_ratio_min": min(tps),
                "tokens_per_s_ratio_max": max(tps), "ttft_ratio": statistics.median(ttft)}
    finally:
        ours.stop()
        theirs.stop()
    return out


def baseline_embed_app(st):
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/embeddings")
    def embed(body: dict) -> dict:
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        vectors = st.encode(texts, normalize_embeddings=True)
        return {"data": [{"embedding": v.tolist(), "index": i} for i, v in enumerate(vectors)]}

    return app


def embed_round(clients: list[httpx.Client], url: str, texts: list[str], requests: int) -> float:
    def one_client(k: int) -> None:
        for j in range(requests):
            text = texts[(k * requests + j) % len(texts)]
            clients[k].post(f"{url}/v1/embeddings", json={"model": "minilm", "input": text,
                                                          "encoding_format": "float"}).raise_for_status()

    start = time.perf_counter()
    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(one_client, range(len(clients))))
    return len(clients) * requests / (time.perf_counter() - start)


def bench_embed(args: argparse.Namespace) -> dict:
    from sentence_transformers import SentenceTransformer

    from dlforge.deploy.serve.app import ServeOptions, create_app
    from dlforge.deploy.serve.served import load_served
    from dlforge.text.minilm import minilm_path

    sys.path.insert(0, str(Path(__file__).parent))
    from minilm_int8 import passages

    texts = passages(256)
    ours = Server(create_app([load_served("minilm")], ServeOptions(log=lambda _: None, waiting=args.clients)))
    theirs = Server(baseline_embed_app(SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)))
    rows = {"dlforge": [], "baseline": []}
    clients = [client() for _ in range(args.clients)]
    try:
        for server in (ours, theirs):
            embed_round(clients, server.url, texts, 1)  # warm: connections open
        for r in range(args.rounds):
            order = [("dlforge", ours), ("baseline", theirs)]
            for key, server in (order if r % 2 == 0 else order[::-1]):
                rows[key].append(embed_round(clients, server.url, texts, args.requests))
    finally:
        for each in clients:
            each.close()
        ours.stop()
        theirs.stop()
    ratios = [a / b for a, b in zip(rows["dlforge"], rows["baseline"], strict=True)]
    return {"clients": args.clients, "requests_each": args.requests, "rounds": args.rounds,
            "dlforge_requests_per_s": statistics.median(rows["dlforge"]),
            "baseline_requests_per_s": statistics.median(rows["baseline"]),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["generate", "embed"])
    p.add_argument("--run", help="generate: a char GPT run of model `gpt` (default: train one for 60 steps)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--clients", type=int, nargs="+", default=None)
    p.add_argument("--requests", type=int, default=4)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.what == "generate":
        args.clients = args.clients or [1, 4]
        out = bench_generate(args)
    else:
        args.clients = (args.clients or [16])[0]
        out = bench_embed(args)
    print(json.dumps(out, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
