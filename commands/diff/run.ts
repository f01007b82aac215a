// lora diff: load both adapters and compare them module by module (surgery/diff.ts).
import { loadAdapter } from "../../formats/adapter/index.js";
import { UsageError } from "../../common/errors.js";
import type { LinalgBackend } from "../../linalg/types.js";
import { diffAdapters, type DiffReport } from "../../surgery/diff.js";

export interface DiffRunOptions {
  a: string;
  b: string;
  signs: boolean;
}

export async function runDiff(
  o: DiffRunOptions,
  io: { backend: LinalgBackend; stdin?: NodeJS.ReadableStream; onModule?: (i: number, n: number) => void },
): Promise<DiffReport> {
  if (o.a === "-" && o.b === "-") throw new UsageError("only one of the two adapters can be - (standard input)");
  const a = await loadAdapter(o.a, io.stdin ? { stdin: io.stdin } : {});
  try {
    const b = await loadAdapter(o.b, io.stdin ? { stdin: io.stdin } : {});
    try {
      return await diffAdapters(a, b, io.backend, { signs: o.signs, ...(io.onModule ? { onModule: io.onModule } : {}) });
    } finally {
      await b.file.close();
    }
  } finally {
    await a.file.close();
  }
}
