import assert from "node:assert/strict";
import { test } from "node:test";
import { Lanes, mapInLanes, ReadAhead } from "./schedule.js";

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

test("mapInLanes: at most `lanes` items at once, each lane on its own items, results in item order whatever finishes first", async () => {
  const items = [5, 1, 4, 2, 3, 1, 2];
  let running = 0,
    peak = 0;
  const lanesOf = new Map<number, number>();
  const busy = new Set<number>();
  const finished: number[] = [];
  const out = await mapInLanes(items, 3, async (x, lane, i) => {
    running++;
    peak = Math.max(peak, running);
    assert.ok(!lanesOf.has(i));
    assert.ok(!busy.has(lane), `lane ${lane} given item ${i} while busy`);
    busy.add(lane);
    lanesOf.set(i, lane);
    for (let k = 0; k < x; k++) await tick(); // item i takes x ticks: they finish out of order
    busy.delete(lane);
    running--;
    finished.push(i);
    return 10 * x + i;
  });
  assert.deepEqual(
    out,
    items.map((x, i) => 10 * x + i),
  );
  assert.equal(peak, 3);
  assert.notDeepEqual(finished, [0, 1, 2, 3, 4, 5, 6], "the items finished out of order");
  assert.ok([...lanesOf.values()].every((l) => l >= 0 && l < 3));
  assert.equal(new Set(lanesOf.values()).size, 3);
  assert.deepEqual(await mapInLanes([], 4, async () => 1), []);
});

test("mapInLanes: after a failure no item starts, the ones running are awaited, the first failure is thrown", async () => {
  const started: number[] = [];
  let running = 0;
  const done = mapInLanes([0, 1, 2, 3, 4, 5], 2, async (i) => {
    started.push(i);
    running++;
    await tick();
    if (i === 1) {
      running--;
      throw new Error(`bad ${i}`);
    }
    await tick();
    await tick();
    running--;
    if (i === 2) throw new Error("later");
    return i;
  });
  await assert.rejects(done, /bad 1/);
  assert.equal(running, 0, "nothing still running when the failure is thrown");
  assert.deepEqual(started, [0, 1], "no item started after the failure");
});
