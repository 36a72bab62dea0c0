// The Kafka record value encoder lives in the format module (src/format/event-codec.ts,
// encodeEvent). This re-export keeps capture.ts, being edited by others in the shared checkout,
// compiling until its import is switched.
export { encodeEvent as encodeChangeFast } from '../format/event-codec.js';
