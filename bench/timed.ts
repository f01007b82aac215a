// One benchmark run of a whole command under /usr/bin/time -v: wall seconds (hrtime), CPU seconds
// and peak RSS as the kernel accounted them.
import { spawnSync } from "node:child_process";

export interface Timed {
  seconds: number;
  cpuSeconds: number;
  maxRssMb: number;
  status: number;
  stderr: string;
  stdout: string;
}

export function timed(cmd: string, args: string[]): Timed {
  const t0 = process.hrtime.bigint();
  const r = spawnSync("/usr/bin/time", ["-v", cmd, ...args], { encoding: "utf8", maxBuffer: 256 << 20 });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr);
  const u = /User time \(seconds\): ([\d.]+)/.exec(r.stderr);
  const sy = /System time \(seconds\): ([\d.]+)/.exec(r.stderr);
  const cpuSeconds = u && sy ? Number(u[1]) + Number(sy[1]) : Number.NaN;
  return { seconds, cpuSeconds, maxRssMb: m ? Number(m[1]) / 1024 : Number.NaN, status: r.status ?? -1, stderr: r.stderr, stdout: r.stdout };
}
