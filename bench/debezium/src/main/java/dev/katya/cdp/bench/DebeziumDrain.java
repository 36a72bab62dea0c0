package dev.katya.cdp.bench;

import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.format.Json;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The Debezium anchor of bench/harness.ts: Debezium's embedded engine, PostgreSQL connector with
 * pgoutput, JSON converter, no Kafka, drains an existing slot (created by the harness before the
 * workload, like the slots the other readers drain) until it has seen the expected number of row
 * changes. Each change is converted to JSON (key and value), as a Debezium Server sink would get it.
 *
 * <p>Arguments: host port database user slot publication expectedChanges [timeoutSeconds]
 *
 * <p>Prints one JSON line on stdout: changes seen, seconds from the task's start (connected, slot
 * opened: comparable with capture's "capture streaming") to the last expected change, seconds
 * from the first change to the last, and the JSON bytes produced. Exit 0 when all were seen, 3 on
 * a timeout, 2 when the engine failed.
 */
public final class DebeziumDrain {
  public static void main(String[] args) throws Exception {
    if (args.length < 7) {
      System.err.println("usage: DebeziumDrain host port database user slot publication expectedChanges [timeoutSeconds]");
      System.exit(64);
    }
    final long expected = Long.parseLong(args[6]);
    final long timeoutS = args.length > 7 ? Long.parseLong(args[7]) : 600;

    Properties p = new Properties();
    p.setProperty("name", "katya-bench-debezium");
    p.setProperty("connector.class", "io.debezium.connector.postgresql.PostgresConnector");
    p.setProperty("offset.storage", "org.apache.kafka.connect.storage.MemoryOffsetBackingStore");
    p.setProperty("offset.flush.interval.ms", "60000");
    p.setProperty("database.hostname", args[0]);
    p.setProperty("database.port", args[1]);
    p.setProperty("database.dbname", args[2]);
    p.setProperty("database.user", args[3]);
    p.setProperty("database.password", System.getenv().getOrDefault("PGPASSWORD", ""));
    // Plain, as cdp connects: the local stack's PostgreSQL has ssl=on and the connector's default
    // (prefer) would encrypt the stream (see bench/lib/env.ts plainLibpqUrl).
    p.setProperty("database.sslmode", "disable");
    p.setProperty("topic.prefix", "bench");
    p.setProperty("plugin.name", "pgoutput");
    p.setProperty("slot.name", args[4]);
    p.setProperty("publication.name", args[5]);
    p.setProperty("publication.autocreate.mode", "disabled");
    p.setProperty("snapshot.mode", "no_data");
    p.setProperty("slot.drop.on.stop", "false");
    // One JSON document per change, no tombstone after a delete (the others emit none either).
    p.setProperty("tombstones.on.delete", "false");
    // Schemas off in the JSON: less work for Debezium, so the figure is an upper bound for it.
    p.setProperty("converter.schemas.enable", "false");
    p.setProperty("key.converter.schemas.enable", "false");
    p.setProperty("value.converter.schemas.enable", "false");
    // Larger batches than the defaults (2048 / 8192), again in Debezium's favour.
    p.setProperty("max.batch.size", "8192");
    p.setProperty("max.queue.size", "32768");

    final AtomicLong seen = new AtomicLong();
    final AtomicLong bytes = new AtomicLong();
    final long[] taskStartedAt = {0};
    final long[] firstAt = {0};
    final long[] lastAt = {0};
    final CountDownLatch done = new CountDownLatch(1);
    final String[] failure = {null};
    final long startedAt = System.nanoTime();

    DebeziumEngine<ChangeEvent<String, String>> engine = DebeziumEngine.create(Json.class)
        .using(p)
        .using(new DebeziumEngine.ConnectorCallback() {
          @Override
          public void taskStarted() {
            if (taskStartedAt[0] == 0) taskStartedAt[0] = System.nanoTime();
          }
        })
        .using((success, message, error) -> {
          if (!success) failure[0] = message + (error != null ? ": " + error : "");
          done.countDown();
        })
        .notifying((List<ChangeEvent<String, String>> records, DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> committer) -> {
          long n = 0;
          long b = 0;
          for (ChangeEvent<String, String> r : records) {
            if (r.value() != null) {
              n++;
              b += r.value().length() + (r.key() != null ? r.key().length() : 0);
            }
            committer.markProcessed(r);
          }
          committer.markBatchFinished();
          if (n > 0) {
            long now = System.nanoTime();
            if (firstAt[0] == 0) firstAt[0] = now;
            bytes.addAndGet(b);
            if (seen.addAndGet(n) >= expected && lastAt[0] == 0) {
              lastAt[0] = now;
              done.countDown();
            }
          }
        })
        .build();

    ExecutorService ex = Executors.newSingleThreadExecutor();
    ex.execute(engine);
    boolean finished = done.await(timeoutS, TimeUnit.SECONDS);
    try {
      engine.close();
    } catch (Exception e) {
      System.err.println("engine close: " + e);
    }
    ex.shutdown();
    ex.awaitTermination(30, TimeUnit.SECONDS);

    long from = taskStartedAt[0] != 0 ? taskStartedAt[0] : startedAt;
    double seconds = lastAt[0] != 0 ? (lastAt[0] - from) / 1e9 : -1;
    double streamSeconds = lastAt[0] != 0 && firstAt[0] != 0 ? (lastAt[0] - firstAt[0]) / 1e9 : -1;
    double startupSeconds = (from - startedAt) / 1e9;
    System.out.println("{\"changes\":" + seen.get() + ",\"expected\":" + expected + ",\"seconds\":" + seconds
        + ",\"firstToLastSeconds\":" + streamSeconds + ",\"startupSeconds\":" + startupSeconds
        + ",\"jsonBytes\":" + bytes.get() + (failure[0] != null ? ",\"error\":\"" + failure[0].replace("\\", "\\\\").replace("\"", "'").replace("\n", " ") + "\"" : "") + "}");
    System.out.flush();
    if (lastAt[0] != 0) System.exit(0);
    System.exit(failure[0] != null ? 2 : (finished ? 2 : 3));
  }
}
