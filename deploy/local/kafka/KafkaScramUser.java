import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;

/**
 * Creates (or resets) one SCRAM user for SCRAM-SHA-256 and SCRAM-SHA-512 through the Admin API
 * (AlterUserScramCredentials, KIP-554), over the stack's PLAINTEXT listener. stack.sh runs it
 * after the broker is ready, so a broker formatted before the SASL_SSL listener existed gets the
 * user too (kafka-storage format --add-scram only works on a fresh log dir). Idempotent: it sets
 * the same password again. Compiled by stack.sh like KafkaProbe (no kafka-tools jar needed).
 * Usage: java -cp probe:libs/* KafkaScramUser host:port user passwordFile
 */
public final class KafkaScramUser {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String user = args[1];
        String password = new String(java.nio.file.Files.readAllBytes(java.nio.file.Paths.get(args[2])), "UTF-8").trim();
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "katya-cdp-stack-scram");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        try (Admin admin = Admin.create(p)) {
            // One request per mechanism: the broker refuses two alterations of one user in a request.
            for (ScramMechanism m : List.of(ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)) {
                admin.alterUserScramCredentials(List.of(
                        new UserScramCredentialUpsertion(user, new ScramCredentialInfo(m, 4096), password)))
                     .all().get(30, TimeUnit.SECONDS);
            }
            System.out.println("SCRAM-SHA-256 and SCRAM-SHA-512 credentials set for user " + user);
        } catch (Exception e) {
            Throwable c = e.getCause() != null ? e.getCause() : e;
            System.err.println("setting SCRAM credentials failed: " + c.getClass().getSimpleName() + ": " + c.getMessage());
            System.exit(1);
        }
        System.exit(0);
    }

    private KafkaScramUser() {
    }
}
