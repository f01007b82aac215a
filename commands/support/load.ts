// Opening the input of a write command (truncate, convert, merge, prune): the adapter, refused
// (exit 3) when some of its modules need the base model's weights for ΔW ((IA)³, bias-only diff,
// OFT: docs/formats.md "LyCORIS"), which `lora inspect` lists and no write command can carry.
import { loadAdapter, refuseBaseDependent, type Adapter } from "../../formats/adapter/index.js";

export async function loadForWrite(input: string, stdin: NodeJS.ReadableStream | undefined, command: string): Promise<Adapter> {
  const a = await loadAdapter(input, stdin ? { stdin } : {});
  try {
    refuseBaseDependent(a, command);
  } catch (e) {
    await a.file.close();
    throw e;
  }
  return a;
}
