"""How an operator sees the gateway run: probes, Prometheus metrics, logs and traces.

    request ─▶ RequestIdMiddleware ─▶ ObservabilityMiddleware ─▶ routes ...
                                      │ opens a `RequestFacts` (a context variable) that the
                                      │ layers below fill in as they learn things:
                                      │   auth dependency  key id, account
                                      │   ledger           model, hold/settle, cost, images
                                      │   routing          provider, upstream seconds
                                      │   error handler    error code
                                      └─▶ at the end: one access line, request metrics, span

- `facts`: the per-request record and the helpers that fill it (no-ops outside a request).
- `metrics`: every Prometheus metric, in one module, and the `/metrics` rendering
  (multiprocess-aware; see `multiproc` for the directory's life cycle).
- `middleware`: the one pure-ASGI middleware (counts, durations, in-flight, access line).
- `logs`: console or JSON log lines, with secrets and base64 runs scrubbed from every line.
- `tracing`: optional OpenTelemetry spans (request -> ledger -> upstream) to an OTLP endpoint.
- `runtime`: a background sampler for event-loop lag and pool occupancy.

Instrumentation lives at the boundaries (the middleware, the ledger, the route caller, the
rate limiter, the idempotency store), never inside the request's orchestration.
"""
