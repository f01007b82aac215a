#!/usr/bin/env node
// Committed shim: runs the compiled CLI (built by `npm install` / `npm run build`).
import("../dist/bin/main.js").catch((e) => {
  if (e && e.code === "ERR_MODULE_NOT_FOUND" && String(e.message).includes("dist/bin/main.js")) {
    process.stderr.write("lora: not built yet: run `npm install` (or `npm run build`) in the lora checkout\n");
    process.exit(1);
  }
  throw e;
});
