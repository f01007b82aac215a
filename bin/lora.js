#!/usr/bin/env node
// Committed shim: runs the compiled CLI (built by `npm install` / `npm run build`).
// `lora --version` alone is answered here, before the command tree and its libraries load
// (start-up target of issue 19: ≤ 1.3× `node -e 0`); the output is the one commander prints.
const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === "--version" || args[0] === "-V")) {
  const { readFileSync } = await import("node:fs");
  let version;
  try {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
    if (typeof pkg.version === "string" && String(pkg.name).endsWith("lora")) version = pkg.version;
  } catch {
    /* fall through to the full program, which reports what it finds */
  }
  if (version !== undefined) process.stdout.write(`${version}\n`);
  else await runProgram();
} else await runProgram();

async function runProgram() {
  await import("../dist/bin/main.js").catch((e) => {
    if (e && e.code === "ERR_MODULE_NOT_FOUND" && String(e.message).includes("dist/bin/main.js")) {
      process.stderr.write("lora: not built yet: run `npm install` (or `npm run build`) in the lora checkout\n");
      process.exit(1);
    }
    throw e;
  });
}
