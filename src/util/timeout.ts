// A promise raced against a timer. The timer is cleared when the promise settles and unref'd, so a
// pending timeout never keeps the process alive on its own.

/** Rejects with `onTimeout()` (default: an Error naming the delay) unless `p` settles within `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => Error = () => new Error(`timed out after ${ms} ms`)): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(onTimeout()), ms);
    t.unref();
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
