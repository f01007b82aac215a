// The process boundary: colour policy before any styling library loads, EPIPE and signal
// handling, exit codes. Nothing else in the tool touches the process.
const argv = process.argv.slice(2);
const env = process.env;
const noColor = argv.includes("--no-color") || (env["NO_COLOR"] ?? "") !== "" || env["TERM"] === "dumb" || !!env["CI"];
if (noColor) env["FORCE_COLOR"] = "0";

const { cleanupTempFilesSync } = await import("../common/atomic.js");

// The reader of the data that went away (`lora … | head -1`) ends the program quietly with status 0
// (a write in progress leaves no temp file). Messages that can no longer be shown (stderr closed,
// as in `2>&1 | head -1`) are dropped: the work goes on, and ends with its own status, or with 0
// when stdout, the same pipe, closes too.
process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  if (e.code !== "EPIPE") throw e;
  cleanupTempFilesSync();
  process.exit(0);
});
process.stderr.on("error", (e: NodeJS.ErrnoException) => {
  if (e.code !== "EPIPE" && e.code !== "ERR_STREAM_DESTROYED") throw e;
});
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
