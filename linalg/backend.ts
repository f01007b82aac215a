// Backend resolution: which LinalgBackend a command gets for --backend auto|cpu|cuda|js, and the
// listing `lora backends [--json]` prints. Cheap to import: the native adapter (and with it the
// .node files and BLAS) and the js backend are loaded only when resolveBackend/listBackends run.
import { BackendUnavailableError } from "../common/errors.js";
import type { BackendName, LinalgBackend } from "./types.js";

export type BackendPreference = "auto" | BackendName;

export interface ResolvedBackend {
  backend: LinalgBackend;
  /** Backends tried before the chosen one (auto only), with the reason each was passed over. */
  skipped: { name: BackendName; reason: string }[];
}

/** One entry of `lora backends --json` (docs/cli.md "backends"): reason only when unavailable. */
export interface BackendListing {
  name: BackendName;
  available: boolean;
  reason?: string;
  detail: string;
}

export interface ResolveOptions {
  /** BLAS and addon threads for the cpu backend; default all cores (os.availableParallelism()). */
  threads?: number;
}

async function js(): Promise<LinalgBackend> {
  return (await import("./js/index.js")).jsBackend;
}

/**
 * auto: cpu with cuda for the operations above their measured crossovers (where a GPU may be
 * usable), else cuda, cpu, js in that order; never fails. An explicit cpu or cuda that is not available
 * throws BackendUnavailableError (exit 4) whose message names the reason and the fix.
 */
export async function resolveBackend(pref: BackendPreference, opts: ResolveOptions = {}): Promise<ResolvedBackend> {
  if (pref === "js") return { backend: await js(), skipped: [] };
  if (pref !== "auto" && pref !== "cpu" && pref !== "cuda") {
    throw new BackendUnavailableError(`unknown backend "${String(pref)}" (choose auto, cpu, cuda or js)`);
  }
  const native = await import("./native.js");
  if (pref === "cpu") return { backend: native.requireBackend("cpu", native.probeCpu({ threads: opts.threads })), skipped: [] };
  if (pref === "cuda") return { backend: native.requireBackend("cuda", native.probeCuda()), skipped: [] };
  const skipped: { name: BackendName; reason: string }[] = [];
  const cpu = safeProbe(() => native.probeCpu({ threads: opts.threads }));
  // Where a GPU may be usable, auto routes each operation by its measured crossover (linalg/native/auto.ts)
  // and loads the cuda addon only when a call first crosses over; without the cpu backend, cuda takes all.
  if (native.cudaLikely() && cpu.ok) {
    const cuda = () => {
      const p = safeProbe(() => native.probeCuda());
      return p.ok ? p.backend : undefined;
    };
    return { backend: native.routedBackend(cpu.backend, cuda), skipped };
  }
  const cuda = safeProbe(() => native.probeCuda());
  if (cuda.ok) return { backend: cuda.backend, skipped };
  skipped.push({ name: "cuda", reason: cuda.reason });
  if (cpu.ok) return { backend: cpu.backend, skipped };
  skipped.push({ name: "cpu", reason: cpu.reason });
  return { backend: await js(), skipped };
}

type SafeProbe = { ok: true; backend: LinalgBackend } | { ok: false; reason: string; detail: string; fix?: string };

function safeProbe(f: () => SafeProbe): SafeProbe {
  try {
    return f();
  } catch (e) {
    // An invalid --threads is the user's error, not a reason to fall back.
    if (e instanceof Error && e.name === "InvalidInputError") throw e;
    return { ok: false, reason: e instanceof Error ? e.message : String(e), detail: "" };
  }
}

/** Every backend, in auto's order of preference (cuda, cpu, js), as `lora backends --json` lists them. */
export async function listBackends(): Promise<BackendListing[]> {
  const native = await import("./native.js");
  const out: BackendListing[] = [];
  for (const [name, probe] of [
    ["cuda", () => native.probeCuda()],
    ["cpu", () => native.probeCpu()],
  ] as const) {
    const p = safeProbe(probe);
    if (p.ok) out.push({ name, available: true, detail: p.backend.detail });
    else out.push({ name, available: false, reason: p.fix ? `${p.reason} (fix: ${p.fix})` : p.reason, detail: p.detail || `${name} backend` });
  }
  out.push({ name: "js", available: true, detail: (await js()).detail });
  return out;
}
