// The process boundary: colour policy before any styling library loads, EPIPE and signal
// handling, exit codes. Nothing else in the tool touches the process.
const argv = process.argv.slice(2);
const env = process.env;
const noColor = argv.includes("--no-color") || (env["NO_COLOR"] ?? "") !== "" || env["TERM"] === "dumb" || !!env["CI"];
if (noColor) env["FORCE_COLOR"] = "0";

// A reader that went away (`lora … | head -1`, or `2>&1 | head -1`, where the notes on stderr meet
// the closed pipe first) ends the program quietly with status 0.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code === "EPIPE") process.exit(0);
    throw e;
  });
}

const { cleanupTempFilesSync } = await import("../common/atomic.js");
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    cleanupTempFilesSync();
    process.stderr.write(`\nlora: interrupted (${sig})\n`);
    process.exit(130);
  });
}

// V8's gc() made callable at first use (a runtime flag, then the function from a fresh context).
let gc: (() => void) | null = null;
const collectGarbage = async (): Promise<void> => {
  if (!gc) {
    const [v8, vm] = await Promise.all([import("node:v8"), import("node:vm")]);
    v8.setFlagsFromString("--expose-gc");
    gc = vm.runInNewContext("gc") as () => void;
  }
  gc();
};

const { main } = await import("../commands/index.js");
const code = await main(argv, {
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  env,
  color: !noColor && !!process.stdout.isTTY,
  collectGarbage,
});
process.exitCode = code;
if (env["LORA_REPORT_RSS"] === "1") process.stderr.write(`lora: peak_rss_kb=${process.resourceUsage().maxRSS}\n`);
