// Writing one benchmark's section of docs/BENCHMARKS.md: replace the "## <heading>" section (up to
// the next "## ") or append it, leaving every other section alone.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const doc = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "docs", "BENCHMARKS.md");

export function writeBenchSection(heading: string, md: string): void {
  const title = `## ${heading}\n`;
  let text = existsSync(doc) ? readFileSync(doc, "utf8") : "# Benchmarks\n";
  const start = text.startsWith(title) ? 0 : text.indexOf("\n" + title) + 1;
  const body = md.trimEnd() + "\n";
  if (start <= 0 && !text.startsWith(title)) {
    text = text.trimEnd() + "\n\n" + body;
  } else {
    const next = text.indexOf("\n## ", start + title.length - 1);
    text = text.slice(0, start) + body + (next >= 0 ? text.slice(next) : "");
  }
  writeFileSync(doc, text);
  process.stderr.write(`wrote the "## ${heading}" section of ${doc}\n`);
}
