// A backend whose named operations are slowed, to test that work started ahead settles before the
// backend's lanes end: it counts the calls in flight, and how many were still running when
// withLanes returned (2 lanes). The first call either fails at once ("fail") or runs without delay
// ("fast"); every later call waits 40 ms first.
import type { LinalgBackend } from "../linalg/types.js";

type SlowedOp = "truncateFactors" | "factorSpectrum" | "factorSpectra" | "mergeWeight";

export interface SlowedStats {
  calls: number;
  inFlight: number;
  /** Calls in flight when withLanes returned; -1 before it has. */
  atEnd: number;
}

export function slowedBackend(be: LinalgBackend, ops: SlowedOp[], first: "fail" | "fast"): { backend: LinalgBackend; stats: SlowedStats } {
  const stats: SlowedStats = { calls: 0, inFlight: 0, atEnd: -1 };
  const wrap =
    (f: (...args: unknown[]) => Promise<unknown>) =>
    async (...args: unknown[]): Promise<unknown> => {
      const k = stats.calls++;
      stats.inFlight++;
      try {
        if (k === 0 && first === "fail") throw new Error("injected failure");
        if (k > 0) await new Promise((r) => setTimeout(r, 40));
        return await f(...args);
      } finally {
        stats.inFlight--;
      }
    };
  const backend: LinalgBackend = {
    ...be,
    withLanes: async (fn) => {
      try {
        return await fn(2);
      } finally {
        stats.atEnd = stats.inFlight;
      }
    },
  };
  const table = backend as unknown as Record<SlowedOp, (...args: unknown[]) => Promise<unknown>>;
  const source = be as unknown as Record<SlowedOp, (...args: unknown[]) => Promise<unknown>>;
  for (const op of ops) table[op] = wrap(source[op].bind(be));
  return { backend, stats };
}
