import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { sourceDatabase, type Config } from '../config/config.js';
import { CdpError, ErrorCodes } from '../errors.js';
import type { Logger } from '../util/log.js';
import { healthChecks, registry } from '../util/metrics.js';

// Prometheus /metrics and /healthz for the daemons (DESIGN.md section 6): serves the registry and
// the health checks of src/util/metrics.ts, where the components register them.

export async function startMetricsServer(cfg: Config, log: Logger): Promise<{ close(): Promise<void>; port: number }> {
  // Every series says which database and slot it is about (issue 14): one Prometheus can then watch
  // several pipelines, and alerts name the database they fire for.
  registry.setDefaultLabels({ database: sourceDatabase(cfg), slot: cfg.source.slot });
  if (cfg.metrics.port === 0) return { close: async () => {}, port: 0 };
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    try {
      if (req.url === '/metrics') {
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(await registry.metrics());
      } else if (req.url === '/healthz') {
        const results: Record<string, unknown> = {};
        let ok = true;
        for (const [name, check] of healthChecks()) {
          const r = check();
          results[name] = r;
          ok &&= r.ok;
        }
        res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ ok, components: results }));
      } else {
        res.writeHead(404).end();
      }
    } catch (err) {
      res.writeHead(500).end(String(err));
    }
  };
  // node:http ignores what a handler returns: a failure the handler could not answer with a 500
  // (writeHead throws once headers are sent) drops that connection instead of becoming an
  // unhandled rejection, which would stop the daemon.
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.warn({ err: (err as Error).message }, 'metrics endpoint: request failed');
      res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      // A second daemon on the host meets the first one's port: one line naming the setting (exit 2).
      const where = `${cfg.metrics.host}:${cfg.metrics.port}`;
      if (err.code === 'EADDRINUSE' || err.code === 'EACCES' || err.code === 'EADDRNOTAVAIL') {
        const why = err.code === 'EADDRINUSE' ? 'is already in use (another cdp daemon on this host?)' : `cannot be used (${err.code})`;
        reject(
          new CdpError(
            ErrorCodes.USAGE,
            `metrics endpoint ${where} ${why}: give each daemon its own metrics.port / CDP_METRICS_PORT (0 disables the endpoint), or set metrics.host / CDP_METRICS_HOST`,
            { cause: err },
          ),
        );
      } else reject(err);
    });
    server.listen(cfg.metrics.port, cfg.metrics.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : cfg.metrics.port;
  log.info({ url: `http://${cfg.metrics.host}:${port}/metrics` }, 'metrics and health endpoint listening');
  return {
    port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
