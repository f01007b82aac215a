// Whether something is at a path, for the checks before any work (an input that is not there, an
// output that would be overwritten): any error of the stat reads as "nothing there".
import type { Stats } from "node:fs";
import { type lstat, stat } from "node:fs/promises";

/** stat of p (lstat: of the link itself, so a dangling link is there), or null when it fails. */
export async function statQuiet(p: string, how: typeof stat | typeof lstat = stat): Promise<Stats | null> {
  try {
    return await how(p);
  } catch {
    return null;
  }
}
