// Outputs are written under a temporary name beside the target and renamed into place at the end
// (docs/cli.md "Adapters in and out"): an error, a full disk or Ctrl-C leaves nothing new beside the
// target: no partial file, no empty directory, no temp file. An input is never overwritten
// unless --force. bin/ calls cleanupTempFilesSync() on SIGINT/SIGTERM.
import {
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  type Dirent,
  type Stats,
} from "node:fs";
import { open, rm, unlink, type FileHandle } from "node:fs/promises";
import { basename, dirname, join, resolve, sep } from "node:path";
import { FileWriter, fileSink, writeFailure, type ByteSink } from "./byte-sink.js";
import { RuntimeFailure, UsageError } from "./errors.js";

export { stdoutSink, type ByteSink } from "./byte-sink.js";

export interface AtomicOptions {
  /** Overwrite an existing output, even one that is also an input. */
  force: boolean;
  /** Input paths of the command: the output must not be one of them (or, for a directory, contain one) unless force. */
  inputs: string[];
}

// ---------------------------------------------------------------------------------------------
// Registry of live temp paths, for cleanup on a signal

type Pending = { kind: "remove" } | { kind: "restore"; to: string };
const pending = new Map<string, Pending>();

/** Temp files and directories that exist right now (for tests and diagnostics). */
export function liveTempPaths(): string[] {
  return [...pending.keys()];
}

/**
 * Remove every temp file and directory still in flight, and put back an output directory that a
 * --force swap had moved aside. Synchronous: safe to call from a signal handler just before exit.
 */
export function cleanupTempFilesSync(): void {
  for (const [path, p] of pending) {
    try {
      if (p.kind === "restore" && !existsSync(p.to)) renameSync(path, p.to);
      else rmSync(path, { recursive: true, force: true });
    } catch {
      // best effort: the process is going down
    }
  }
  pending.clear();
}

const rand = (): string => Math.random().toString(36).slice(2, 10).padEnd(8, "0");

function tempName(dir: string, base: string, tag: string): string {
  return join(dir, `.${base}.${tag}-${process.pid}-${rand()}`);
}

/** Does this errno mean "the path does not exist"? */
const isMissing = (e: unknown): boolean => {
  const c = (e as NodeJS.ErrnoException)?.code;
  return c === "ENOENT" || c === "ENOTDIR";
};

/**
 * stat (or lstat: the link itself) of p, or null where nothing is there. Synchronous, as are the
 * realpath calls below: metadata the kernel answers at once, where a thread-pool round trip costs
 * more than the call (a catalog's thousands of outputs: docs/BENCHMARKS.md "catalog").
 */
function statOrNull(p: string, how: typeof statSync | typeof lstatSync = statSync): Stats | null {
  try {
    return how(p, { throwIfNoEntry: false }) ?? null; // ENOENT answered without an exception (new outputs miss)
  } catch (e) {
    if (isMissing(e)) return null; // ENOTDIR
    throw e;
  }
}

/** stat (or lstat) of a path of the output `target` (null where nothing is there); other errors as the write's failure. */
function statOrThrow(target: string, p: string, how: typeof statSync | typeof lstatSync): Stats | null {
  try {
    return statOrNull(p, how);
  } catch (e) {
    throw writeFailure(target, e);
  }
}

/** f(), or null where it throws (a probe whose failure means "not that file"). */
function orNull<T>(f: () => T | null): T | null {
  try {
    return f();
  } catch {
    return null;
  }
}

/** realpath of p, or `otherwise` where it cannot be resolved. */
function realOr(p: string, otherwise: string): string {
  try {
    return realpathSync(p);
  } catch {
    return otherwise;
  }
}

/** The parent directory must exist and be a directory (RuntimeFailure, exit 1, naming it). */
function checkParent(target: string, dir: string): void {
  const st = statOrThrow(target, dir, statSync);
  if (!st) throw new RuntimeFailure(`cannot write ${target}: directory ${dir} does not exist`);
  if (!st.isDirectory()) throw new RuntimeFailure(`cannot write ${target}: ${dir} is not a directory`);
}

/** (dev, ino) of every input that exists; "-" and missing paths are skipped. */
function inputIdentities(inputs: readonly string[]): { path: string; dev: number; ino: number }[] {
  const out: { path: string; dev: number; ino: number }[] = [];
  for (const p of inputs) {
    if (p === "-" || p === "") continue;
    const st = orNull(() => statOrNull(p));
    if (st) out.push({ path: p, dev: st.dev, ino: st.ino });
  }
  return out;
}

/**
 * What replacing the directory `abs` with the files `names` would destroy: with --force, a directory
 * is replaced only when it holds lora's own outputs, i.e. the files this write puts there and the
 * weights (.safetensors, .safetensors.index.json) of an earlier output under other names. Any other
 * file, a subdirectory, or an input that this write does not rewrite under its own name is foreign
 * (names listed, subdirectories with a trailing /).
 */
function foreignEntries(abs: string, names: ReadonlySet<string>, inputs: readonly { dev: number; ino: number }[]): string[] {
  let entries: Dirent[];
  try {
    entries = readdirSync(abs, { withFileTypes: true });
  } catch (e) {
    throw writeFailure(abs, e);
  }
  const foreign: string[] = [];
  for (const e of entries.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0))) {
    const fileLike = e.isFile() || e.isSymbolicLink();
    if (fileLike && names.has(e.name)) continue; // rewritten (an input of that name was read before)
    if (e.isFile() && /\.safetensors(\.index\.json)?$/.test(e.name)) {
      const st = orNull(() => statOrNull(join(abs, e.name), lstatSync));
      if (st && !inputs.some((i) => i.dev === st.dev && i.ino === st.ino)) continue; // an earlier output's weights
    }
    foreign.push(e.isDirectory() ? `${e.name}/` : e.name);
  }
  return foreign;
}

function refuseInput(target: string, input: string): UsageError {
  return new UsageError(`refusing to overwrite input ${input} with output ${target}`, {
    hint: "choose another output path, or pass --force to replace the input once it has been read",
  });
}

function outputExists(target: string): UsageError {
  return new UsageError(`output exists: ${target} (use --force to overwrite)`);
}

// ---------------------------------------------------------------------------------------------

/**
 * Write one file atomically: `fill` writes into a temp file `.<basename>.tmp-<pid>-<rand>` beside
 * the target (batched, fsynced), which is then renamed over it. On any error the temp file is
 * removed and the error rethrown (I/O errors as RuntimeFailure naming the target).
 */
export async function writeFileAtomic(target: string, fill: (sink: ByteSink) => Promise<void>, opts: AtomicOptions): Promise<void> {
  const abs = resolve(target);
  const dir = dirname(abs);
  checkParent(target, dir);

  const existing = statOrThrow(target, abs, lstatSync);
  if (existing) {
    const resolved = existing.isSymbolicLink() ? orNull(() => statOrNull(abs)) : existing;
    if (resolved?.isDirectory()) throw new UsageError(`output ${target} is a directory; give a file path ending in .safetensors`);
    if (resolved) {
      for (const inp of inputIdentities(opts.inputs)) {
        if (inp.dev === resolved.dev && inp.ino === resolved.ino && !opts.force) throw refuseInput(target, inp.path);
      }
    }
    if (!opts.force) throw outputExists(target);
  }

  const tmp = tempName(dir, basename(abs), "tmp");
  pending.set(tmp, { kind: "remove" });
  let fh: FileHandle | null = null;
  try {
    fh = await openNew(tmp, "wx", 0o666, target);
    const writer = new FileWriter(fh);
    try {
      await fill(fileSink(writer, target));
      try {
        await writer.flush();
        await fh.sync();
        await fh.close();
        fh = null;
      } catch (e) {
        throw writeFailure(target, e);
      }
    } finally {
      writer.release();
    }
    await commitFile(tmp, abs, target, opts.force);
    pending.delete(tmp);
    await syncDir(dir);
  } catch (e) {
    if (fh) await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    pending.delete(tmp);
    throw e;
  }
}

/** Move the finished temp file into place; without force, never replace a file that appeared meanwhile. */
async function commitFile(tmp: string, abs: string, target: string, force: boolean): Promise<void> {
  try {
    if (!force) {
      try {
        linkSync(tmp, abs); // fails with EEXIST instead of replacing
        try {
          unlinkSync(tmp);
        } catch {
          // the output is in place; a leftover temp name is harmless
        }
        return;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EEXIST") throw outputExists(target);
        // no hard links on this file system: fall back to rename
      }
    }
    renameSync(tmp, abs);
  } catch (e) {
    throw writeFailure(target, e);
  }
}

async function syncDir(dir: string): Promise<void> {
  try {
    const d = await open(dir, "r");
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // not supported everywhere; the data itself was fsynced
  }
}

export interface DirEntrySpec {
  /** A plain file name (no directory part). */
  name: string;
  fill: (sink: ByteSink) => Promise<void>;
}

/**
 * Write a directory atomically: every file is written into a temp directory beside the target,
 * which is renamed into place at the end. With force and an existing directory, the old one is
 * moved aside, the new one renamed in, then the old one removed (and put back if anything fails
 * in between). Never leaves an empty or partial directory.
 */
export async function writeDirAtomic(targetDir: string, files: readonly DirEntrySpec[], opts: AtomicOptions): Promise<void> {
  const abs = resolve(targetDir);
  const parent = dirname(abs);
  const names = new Set<string>();
  for (const f of files) {
    if (!f.name || f.name === "." || f.name === ".." || /[/\\\0]/.test(f.name) || names.has(f.name)) {
      throw new RuntimeFailure(`internal: bad or repeated file name ${JSON.stringify(f.name)} for ${targetDir}`);
    }
    names.add(f.name);
  }
  checkParent(targetDir, parent);

  const existing = statOrThrow(targetDir, abs, lstatSync);
  if (existing) {
    if (!existing.isDirectory()) {
      throw new UsageError(`output ${targetDir} exists and is not a directory`, {
        hint: "a path without .safetensors names an output directory; remove the file or choose another path",
      });
    }
    const realAbs = realOr(abs, abs);
    for (const inp of opts.inputs) {
      if (inp === "-" || inp === "") continue;
      const r = realOr(inp, resolve(inp));
      if ((r === realAbs || r.startsWith(realAbs + sep)) && !opts.force) throw refuseInput(targetDir, inp);
    }
    const idents = inputIdentities(opts.inputs);
    if (idents.length > 0 && !opts.force) {
      // an input reached through a symlink or hard link inside the directory
      for (const name of names) {
        const st = orNull(() => statOrNull(join(abs, name)));
        const hit = st && idents.find((i) => i.dev === st.dev && i.ino === st.ino);
        if (hit) throw refuseInput(targetDir, hit.path);
      }
    }
    if (!opts.force) throw outputExists(targetDir);
    const foreign = foreignEntries(abs, names, inputIdentities(opts.inputs));
    if (foreign.length > 0) {
      const shown = foreign.slice(0, 3).join(", ") + (foreign.length > 3 ? ` and ${foreign.length - 3} more` : "");
      throw new UsageError(`output ${targetDir} holds what this command does not write (${shown}): not replaced, even with --force`, {
        hint: "--force replaces a directory of lora's own outputs only; move those files away or choose another directory",
      });
    }
  }

  const tmp = tempName(parent, basename(abs), "tmp");
  pending.set(tmp, { kind: "remove" });
  try {
    try {
      mkdirSync(tmp, { mode: 0o777 });
    } catch (e) {
      throw writeFailure(targetDir, e);
    }
    for (const f of files) {
      const path = join(tmp, f.name);
      const shown = join(targetDir, f.name);
      let fh: FileHandle;
      try {
        fh = await open(path, "wx", 0o666);
      } catch (e) {
        throw writeFailure(shown, e);
      }
      try {
        const writer = new FileWriter(fh);
        try {
          await f.fill(fileSink(writer, shown));
          try {
            await writer.flush();
            await fh.sync();
          } catch (e) {
            throw writeFailure(shown, e);
          }
        } finally {
          writer.release();
        }
      } finally {
        await fh.close().catch(() => {});
      }
    }
    await syncDir(tmp);
    await commitDir(tmp, abs, parent, targetDir, existing !== null);
    pending.delete(tmp);
    await syncDir(parent);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
    pending.delete(tmp);
    throw e;
  }
}

async function commitDir(tmp: string, abs: string, parent: string, targetDir: string, replace: boolean): Promise<void> {
  if (!replace) {
    try {
      renameSync(tmp, abs);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOTEMPTY" || code === "EEXIST" || code === "ENOTDIR") throw outputExists(targetDir);
      throw writeFailure(targetDir, e);
    }
    return;
  }
  const old = tempName(parent, basename(abs), "old");
  try {
    renameSync(abs, old);
  } catch (e) {
    throw writeFailure(targetDir, e);
  }
  pending.set(old, { kind: "restore", to: abs });
  try {
    renameSync(tmp, abs);
  } catch (e) {
    try {
      renameSync(old, abs);
    } catch {
      // nothing more to try: the old output stays under its .old name
    }
    pending.delete(old);
    throw writeFailure(targetDir, e);
  }
  pending.set(old, { kind: "remove" });
  await rm(old, { recursive: true, force: true }).catch(() => {});
  pending.delete(old);
}

// ---------------------------------------------------------------------------------------------

/** Create `path` (it must not exist: flags "wx"/"wx+"); a failure is reported against `target`, the path the user named. */
async function openNew(path: string, flags: string, mode: number, target: string): Promise<FileHandle> {
  try {
    return await open(path, flags, mode);
  } catch (e) {
    throw writeFailure(target, e);
  }
}

/**
 * Run `fn` with a scratch file `.<basename>.scratch-<pid>-<rand>` beside `near` (an output path),
 * open for reading and writing. It is removed afterwards, on error, and (registered like the temp
 * outputs) on a signal: intermediate results too large to hold in memory never outlive the run.
 */
export async function withScratchFile<T>(near: string, fn: (fh: FileHandle) => Promise<T>): Promise<T> {
  const abs = resolve(near);
  const dir = dirname(abs);
  checkParent(near, dir);
  const path = tempName(dir, basename(abs), "scratch");
  pending.set(path, { kind: "remove" });
  let fh: FileHandle | null = null;
  try {
    fh = await openNew(path, "wx+", 0o600, near);
    return await fn(fh);
  } finally {
    if (fh) await fh.close().catch(() => {});
    await unlink(path).catch(() => {});
    pending.delete(path);
  }
}

/**
 * Every output of lora is safetensors (a file, or a directory of safetensors and JSON); a target
 * named like a PyTorch pickle (.bin, .pt, .pth, .ckpt, .pkl) would be a safetensors file or a
 * directory under a misleading name, so it is refused before anything is written.
 */
export function refusePickleName(target: string): void {
  const m = /\.(bin|pt|pth|ckpt|pkl|pickle)$/i.exec(target);
  if (m && target !== "-") {
    throw new UsageError(`refusing to write ${target}: lora writes safetensors only, never a PyTorch .${m[1]} pickle`, {
      hint: `name the output ${target.slice(0, -m[0].length)}.safetensors (one file) or give a directory name`,
    });
  }
}
