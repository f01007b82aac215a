// The adapters a command line names (docs/cli.md "Catalogs"): files, directories of adapters,
// `*`/`?` globs in the last path component and --from-list files, expanded in name order; and the
// --max-bytes size syntax. Kept apart from the catalog itself so a command on one adapter loads
// only this.
import { readdir, readFile, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { RuntimeFailure, UsageError } from "../common/errors.js";
import { DIR_FILES } from "../formats/adapter/load.js";

async function kind(p: string): Promise<"file" | "dir" | null> {
  try {
    const s = await stat(p);
    return s.isDirectory() ? "dir" : "file";
  } catch {
    return null;
  }
}

async function isAdapterDir(p: string): Promise<boolean> {
  for (const f of DIR_FILES) if ((await kind(join(p, f))) === "file") return true;
  return false;
}

function globToRegExp(g: string): RegExp {
  return new RegExp(
    "^" +
      g
        .replace(/[.+^${}()|\\]/g, "\\$&")
        .replace(/\*/g, "[^/]*")
        .replace(/\?/g, "[^/]") +
      "$",
  );
}

/** One argument → the adapters it names, in name order. */
async function expandOne(arg: string): Promise<string[]> {
  if (arg === "-") return [arg];
  const k = await kind(arg);
  if (k === "file") return [arg];
  if (k === "dir") {
    if (await isAdapterDir(arg)) return [arg];
    const out: string[] = [];
    for (const name of (await readdir(arg)).sort()) {
      const p = join(arg, name);
      const pk = await kind(p);
      if ((pk === "file" && name.endsWith(".safetensors")) || (pk === "dir" && (await isAdapterDir(p)))) out.push(p);
    }
    return out;
  }
  if (/[*?]/.test(basename(arg))) {
    const dir = dirname(arg),
      re = globToRegExp(basename(arg));
    if ((await kind(dir)) !== "dir") return [];
    return (await readdir(dir))
      .sort()
      .filter((n) => re.test(n))
      .map((n) => join(dir, n));
  }
  return [arg]; // not there: reported when it is read
}

/** Every adapter named by the arguments and the --from-list files (one path per line, # comments). */
export async function expandInputs(args: string[], fromList: string[] = []): Promise<string[]> {
  if (args.length === 0 && fromList.length === 0) throw new UsageError("missing required argument 'adapter'");
  const all = [...args];
  for (const list of fromList) {
    let text: string;
    try {
      text = await readFile(list, "utf8");
    } catch (e) {
      throw new RuntimeFailure(`--from-list ${list}: ${(e as Error).message}`);
    }
    all.push(
      ...text
        .split(/\r?\n/)
        .map((l) => l.trim())
        .filter((l) => l !== "" && !l.startsWith("#")),
    );
  }
  const out: string[] = [];
  for (const a of all) out.push(...(await expandOne(a)));
  if (out.length === 0) throw new UsageError("no adapters found in the inputs given");
  if (out.filter((p) => p === "-").length > 1) throw new UsageError("standard input (-) can be given once");
  return out;
}

/** "500MB", "1.5GiB", "2e9", "24G": bytes (K/M/G/T decimal, Ki/Mi/Gi/Ti binary; a trailing B optional). */
export function parseSize(v: string): number {
  const m = /^\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([kmgt]i?)?b?\s*$/i.exec(v);
  if (!m) throw new UsageError(`--max-bytes must be a size such as 500MB, 1.5GiB or 2e9, got "${v}"`);
  const unit = (m[2] ?? "").toLowerCase();
  const pow = { "": 0, k: 1, m: 2, g: 3, t: 4 }[unit[0] ?? ""] ?? 0;
  const n = Number(m[1]) * (unit.endsWith("i") ? 1024 : 1000) ** pow;
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`--max-bytes: "${v}" is not a byte count`);
  return Math.floor(n);
}
