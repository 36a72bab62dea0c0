// The metrics of `cdp capture` (served by the metrics server of `cdp capture` / `cdp run`).

import { counter, gauge, histogram } from '../util/metrics.js';

export const metrics = {
  changes: counter('cdp_capture_changes_total', 'Row changes and other data records acknowledged by Kafka'),
  records: counter('cdp_capture_records_total', 'Kafka records acknowledged (data, COMMIT markers, watermarks)'),
  bytes: counter('cdp_capture_bytes_total', 'Bytes of encoded change events acknowledged by Kafka'),
  transactions: counter('cdp_capture_transactions_total', 'Transactions decoded (including heartbeats)'),
  ddlReplayRisks: counter(
    'cdp_capture_ddl_replay_risks_total',
    'DDL events restore will probably not replay exactly (per-row rewrite values, DDL in a SQL function): a restore past one needs --ddl-override',
  ),
  forgedMessages: counter(
    'cdp_capture_forged_messages_total',
    'cdp.ddl / cdp.sequences logical messages that were not signed by the engine (forged or from an old trigger) and were dropped',
  ),
  nonTransactionalMessages: counter(
    'cdp_capture_nontransactional_messages_total',
    'Non-transactional logical messages seen and not archived (they belong to no transaction)',
  ),
  restarts: counter('cdp_capture_restarts_total', 'Capture sessions restarted after an error'),
  lag: gauge('cdp_capture_slot_lag_bytes', 'WAL bytes between the server WAL end last seen and the confirmed LSN'),
  ackLsn: gauge('cdp_capture_acknowledged_lsn', 'Last LSN confirmed to the replication slot (bytes)'),
  produceLatency: histogram(
    'cdp_capture_produce_latency_seconds',
    'Kafka produce request latency per batch',
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  ),
  batchRecords: histogram('cdp_capture_batch_records', 'Records per Kafka produce request', [1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000]),
};
