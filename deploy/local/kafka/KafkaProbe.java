import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.common.Node;

/**
 * Readiness probe used by stack.sh: "port 9092 accepts connections" is not the same as "the broker
 * serves clients". Exit 0 only when
 *   1. the broker answers a Metadata request and lists itself (it has registered with the KRaft
 *      controller and been unfenced), and
 *   2. the group coordinator answers for a consumer group. The first such call makes the broker
 *      create __consumer_offsets and load it; doing it here means the first test that joins a
 *      group does not race the coordinator loading (kafkajs logs "coordinator is loading" and
 *      retries, which is noisy and slow).
 * Compiled once by stack.sh against the broker's own kafka-clients jar, so no extra download.
 * Usage: java -cp probe:libs/* KafkaProbe host:port timeoutSeconds
 */
public final class KafkaProbe {
    public static void main(String[] args) throws Exception {
        String bootstrap = args.length > 0 ? args[0] : "127.0.0.1:9092";
        int timeoutS = args.length > 1 ? Integer.parseInt(args[1]) : 10;
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "katya-cdp-stack-probe");
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, Integer.toString(timeoutS * 1000));
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, Integer.toString(timeoutS * 1000));
        try (Admin admin = Admin.create(p)) {
            DescribeClusterResult cluster = admin.describeCluster();
            Node controller = cluster.controller().get(timeoutS, TimeUnit.SECONDS);
            int brokers = cluster.nodes().get(timeoutS, TimeUnit.SECONDS).size();
            if (brokers < 1) {
                System.err.println("broker answers but lists no broker yet");
                System.exit(1);
            }
            admin.listConsumerGroupOffsets("katya-cdp-stack-probe")
                 .partitionsToOffsetAndMetadata().get(timeoutS, TimeUnit.SECONDS);
            System.out.println("ready: brokers=" + brokers + " controller=" + controller.id()
                    + " cluster=" + cluster.clusterId().get(timeoutS, TimeUnit.SECONDS));
        } catch (Exception e) {
            Throwable c = e.getCause() != null ? e.getCause() : e;
            System.err.println("not ready: " + c.getClass().getSimpleName() + ": " + c.getMessage());
            System.exit(1);
        }
        // The admin client's threads are daemons, but be explicit: a probe must never linger.
        System.exit(0);
    }

    private KafkaProbe() {
    }
}
