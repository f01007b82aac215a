// The I/O floor of `lora truncate --max-bytes` over a catalog (a benchmark helper, not a test):
// `node dist/bench/catalog-floor.js LIST OUT_DIR`. Does the file work truncate cannot avoid and
// nothing else: every input read whole twice (the allocation's pass, then the truncation's), and
// for each input half of its bytes written atomically as truncate writes an output (a temp file or
// directory beside the target, each file fsynced, the temp directory fsynced, renamed into place,
// the output directory fsynced), three adapters in flight. No parsing, no arithmetic.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { open } from "node:fs/promises";
import { basename, join } from "node:path";

async function writeSynced(path: string, bytes: Uint8Array): Promise<void> {
  const h = await open(path, "wx");
  try {
    await h.write(bytes);
    await h.sync();
  } finally {
    await h.close();
  }
}

async function syncPath(path: string): Promise<void> {
  const h = await open(path, "r");
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

async function writeOne(input: string, outDir: string): Promise<void> {
  const isDir = statSync(input).isDirectory();
  const model = isDir ? join(input, "adapter_model.safetensors") : input;
  const bytes = readFileSync(model);
  const half = bytes.subarray(0, bytes.length >> 1);
  const target = join(outDir, basename(input));
  const tmp = join(outDir, `.${basename(input)}.floor-tmp`);
  if (isDir) {
    mkdirSync(tmp);
    await writeSynced(join(tmp, "adapter_model.safetensors"), half);
    await writeSynced(join(tmp, "adapter_config.json"), readFileSync(join(input, "adapter_config.json")));
    await syncPath(tmp);
  } else {
    await writeSynced(tmp, half);
  }
  if (existsSync(target)) rmSync(target, { recursive: true, force: true });
  renameSync(tmp, target);
  await syncPath(outDir);
}

async function main(): Promise<void> {
  const [list, outDir] = process.argv.slice(2);
  if (!list || !outDir) throw new Error("usage: catalog-floor LIST OUT_DIR");
  const inputs = readFileSync(list, "utf8").split("\n").filter(Boolean);
  mkdirSync(outDir, { recursive: true });
  for (const p of inputs) readFileSync(statSync(p).isDirectory() ? join(p, "adapter_model.safetensors") : p); // the first pass
  let next = 0;
  const lane = async () => {
    while (next < inputs.length) await writeOne(inputs[next++]!, outDir);
  };
  await Promise.all([lane(), lane(), lane()]);
}

await main();
