import assert from "node:assert/strict";
import { test } from "node:test";
import { mapInLanes } from "./map-in-lanes.js";

const tick = () => new Promise((r) => setImmediate(r));

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
