import client from 'prom-client';

// The process's Prometheus registry and health checks (DESIGN.md section 6): every component (capture,
// archiver, ...) registers its `cdp_` metrics and a liveness check here; the endpoint that serves them
// is src/ops/metrics.ts. Below the pipeline so that its parts need not import the ops layer.

export const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry, prefix: 'cdp_process_' });

export function counter(name: string, help: string, labelNames: string[] = []): client.Counter<string> {
  return (registry.getSingleMetric(name) as client.Counter<string>) ?? new client.Counter({ name, help, labelNames, registers: [registry] });
}

export function gauge(name: string, help: string, labelNames: string[] = []): client.Gauge<string> {
  return (registry.getSingleMetric(name) as client.Gauge<string>) ?? new client.Gauge({ name, help, labelNames, registers: [registry] });
}

export function histogram(name: string, help: string, buckets: number[], labelNames: string[] = []): client.Histogram<string> {
  return (registry.getSingleMetric(name) as client.Histogram<string>) ?? new client.Histogram({ name, help, buckets, labelNames, registers: [registry] });
}

export type HealthCheck = () => { ok: boolean; detail?: Record<string, unknown> };

const checks = new Map<string, HealthCheck>();

/** The registered checks, for /healthz. */
export function healthChecks(): ReadonlyMap<string, HealthCheck> {
  return checks;
}

/** Each component registers a liveness check; /healthz answers 503 when any says not ok. */
export function registerHealth(name: string, check: HealthCheck): void {
  checks.set(name, check);
}
