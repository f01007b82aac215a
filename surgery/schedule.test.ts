import assert from "node:assert/strict";
import { test } from "node:test";
import { Lanes, ReadAhead } from "./schedule.js";

const tick = () => new Promise((r) => setImmediate(r));

test("ReadAhead starts each item once, `window` items ahead of the one taken, in order", async () => {
  const started: number[] = [];
  const ra = new ReadAhead(
    [1, 2, 3, 4, 5],
    async (k) => {
      started.push(k);
      return k * 10;
    },
    2,
  );
  assert.equal(await ra.take(1), 10);
  assert.deepEqual(started, [1, 2, 3]);
  assert.equal(await ra.take(2), 20);
  assert.deepEqual(started, [1, 2, 3, 4]);
  for (const k of [3, 4, 5]) assert.equal(await ra.take(k), k * 10);
  assert.deepEqual(started, [1, 2, 3, 4, 5]);
  assert.equal(await ra.take(9), 90, "an item outside the order is started on demand");
});

test("ReadAhead taken out of order starts no item before the one taken, and at most `window` after it", async () => {
  const started: number[] = [];
  const ra = new ReadAhead(
    [1, 2, 3, 4, 5, 6],
    async (k) => {
      started.push(k);
      return k;
    },
    1,
  );
  assert.equal(await ra.take(6), 6);
  assert.deepEqual(started, [6]);
  assert.equal(await ra.take(5), 5);
  assert.deepEqual(started, [6, 5], "6 was taken: not started again");
  assert.equal(await ra.take(1), 1);
  assert.deepEqual(started, [6, 5, 1, 2]);
  for (const k of [2, 3, 4]) assert.equal(await ra.take(k), k);
  assert.deepEqual(started, [6, 5, 1, 2, 3, 4], "each item started once");
});

test("ReadAhead.settled waits for the work started ahead and not taken, failed or not", async () => {
  const gates = new Map<number, () => void>();
  const finished: number[] = [];
  const ra = new ReadAhead(
    [1, 2, 3],
    (k) =>
      new Promise<number>((resolve, reject) =>
        gates.set(k, () => {
          finished.push(k);
          if (k === 3) reject(new Error("bad 3"));
          else resolve(k);
        }),
      ),
    2,
  );
  const first = ra.take(1); // starts 2 and 3 ahead
  gates.get(1)!();
  assert.equal(await first, 1);
  let done = false;
  const all = ra.settled().then(() => (done = true));
  await tick();
  assert.equal(done, false, "2 and 3 still run");
  gates.get(2)!();
  await tick();
  assert.equal(done, false, "3 still runs");
  gates.get(3)!();
  await all;
  assert.deepEqual(finished, [1, 2, 3]);
});

test("ReadAhead: a failure of work started ahead surfaces when its item is taken", async () => {
  const ra = new ReadAhead(
    ["a", "b"],
    async (k) => {
      if (k === "b") throw new Error("bad b");
      return k;
    },
    1,
  );
  assert.equal(await ra.take("a"), "a");
  await tick();
  await assert.rejects(ra.take("b"), /bad b/);
});

test("Lanes runs at most `count` calls at once and every call completes in order of arrival", async () => {
  const lanes = new Lanes(2);
  let running = 0,
    peak = 0;
  const order: number[] = [];
  const gates: (() => void)[] = [];
  const job = (i: number) =>
    lanes.run(async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise<void>((r) => gates.push(r));
      running--;
      order.push(i);
      return i;
    });
  const all = Promise.all([0, 1, 2, 3, 4].map(job));
  for (let i = 0; i < 5; i++) {
    await tick();
    assert.ok(running <= 2, `running ${running}`);
    gates.shift()!();
  }
  assert.deepEqual(await all, [0, 1, 2, 3, 4]);
  assert.equal(peak, 2);
  assert.deepEqual(order, [0, 1, 2, 3, 4]);
  await assert.rejects(
    lanes.run(async () => {
      throw new Error("x");
    }),
    /x/,
  );
  assert.equal(await lanes.run(async () => 7), 7, "a failed call frees its lane");
});
