// The Avro block codecs moved to the format module (src/format/codec.ts); this re-export keeps the
// Kafka layer's imports (being edited by others) compiling until they import src/format directly.
export * from '../format/codec.js';
