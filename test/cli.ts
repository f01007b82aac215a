// Running the CLI in-process (commands/index.ts main) with captured, non-terminal streams.
import { main } from "../commands/index.js";

export async function runCli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "",
    err = "";
  const sink = (f: (s: string) => void) =>
    ({
      write: (s: string, cb?: () => void) => {
        f(s);
        cb?.(); // as a stream does once it has taken the chunk
        return true;
      },
      isTTY: false,
    }) as unknown as NodeJS.WriteStream;
  const code = await main(argv, { stdout: sink((s) => (out += s)), stderr: sink((s) => (err += s)), stdin: process.stdin, env: {}, color: false } as never);
  return { code, out, err };
}
