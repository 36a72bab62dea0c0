// The change event moved to the format module (src/format/change-event.ts, docs/format.md). This
// re-export keeps the modules that still import it from here compiling while they are edited by
// others; new code imports src/format directly.
export * from '../format/change-event.js';
