"""The server's Prometheus metrics, in a registry of its own (two apps in one process never share counts).

    dlforge_requests_total{route, status}          every request, counted once, when its response ends
    dlforge_request_seconds{route}                 to the end of the response (of the stream, for a stream)
    dlforge_first_byte_seconds{route}              to the first byte of the body
    dlforge_time_to_first_token_seconds{model}     generation: from the start of a choice to its first text
    dlforge_inter_token_seconds{model}             generation: between two pieces of text
    dlforge_prompt_tokens_total{model}, dlforge_generated_tokens_total{model}
    dlforge_batch_items{model}                     items per dynamic batch (texts, rows, generated choices)
    dlforge_requests_running, dlforge_requests_waiting
    dlforge_model_info{model, kind, source, version}   1 per model loaded
    dlforge_drift_score{model, feature, statistic}  with --monitor-every: each drift statistic of the recent
                                                    stored requests against the reference (deploy.monitor_gauges)
    dlforge_drift_detected{model, feature}          1 where the statistic Evidently's rule picks says drift, else 0
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("dlforge_requests", "Requests answered, by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("dlforge_request_seconds", "Time to the end of the response", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.first_byte = Histogram("dlforge_first_byte_seconds", "Time to the first byte of the response body",
                                    ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("dlforge_time_to_first_token_seconds", "Generation: time to the first text",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.inter_token = Histogram("dlforge_inter_token_seconds", "Generation: time between two pieces of text",
                                     ["model"], buckets=TOKEN_BUCKETS, registry=r)
        self.prompt_tokens = Counter("dlforge_prompt_tokens", "Tokens read from prompts and inputs", ["model"],
                                     registry=r)
        self.generated_tokens = Counter("dlforge_generated_tokens", "Tokens generated", ["model"], registry=r)
        self.batch_size = Histogram("dlforge_batch_items", "Items per dynamic batch (texts, rows, generated choices)",
                                    ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.running = Gauge("dlforge_requests_running", "Requests running a model", registry=r)
        self.waiting = Gauge("dlforge_requests_waiting", "Requests waiting to run a model", registry=r)
        self.model_info = Gauge("dlforge_model_info", "Models loaded (1 each)", ["model", "kind", "source", "version"],
                                registry=r)
        self.drift_score = Gauge("dlforge_drift_score", "Drift of recent requests from the reference, by statistic",
                                 ["model", "feature", "statistic"], registry=r)
        self.drift_detected = Gauge("dlforge_drift_detected", "1 where drift is detected (the rule's statistic)",
                                    ["model", "feature"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
