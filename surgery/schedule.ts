// Scheduling for commands that stream modules in a fixed order: start the next modules' work while
// the current one is written (ReadAhead), and cap how many native calls run at once (Lanes).

/**
 * Work started ahead of its use, in a known order: take(k) returns k's promise and makes sure the
 * `window` items after k have started. A rejection of work started ahead surfaces when its item is
 * taken, not before.
 */
export class ReadAhead<K, V> {
  private readonly index = new Map<K, number>();
  private readonly started = new Map<K, Promise<V>>();
  private next = 0;

  constructor(
    private readonly order: readonly K[],
    private readonly start: (k: K) => Promise<V>,
    private readonly window: number,
  ) {
    order.forEach((k, i) => this.index.set(k, i));
  }

  take(k: K): Promise<V> {
    const i = this.index.get(k);
    if (i === undefined) return this.start(k);
    this.launchThrough(i + this.window);
    const p = this.started.get(k) ?? this.start(k);
    this.started.delete(k);
    return p;
  }

  private launchThrough(last: number): void {
    for (; this.next <= last && this.next < this.order.length; this.next++) {
      const k = this.order[this.next]!;
      const p = this.start(k);
      p.catch(() => {}); // surfaces through take(k)
      this.started.set(k, p);
    }
  }
}

/** At most `count` calls of run() in progress at once; the others wait in order. */
export class Lanes {
  private busy = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly count: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.busy >= Math.max(1, this.count)) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.busy++;
    try {
      return await fn();
    } finally {
      const wake = this.waiting.shift();
      if (wake) wake();
      else this.busy--;
    }
  }
}

/**
 * fn over every item, `lanes` items in progress at once (each lane takes the next item when it
 * finishes one, so the items complete out of order); results in item order. fn is told its lane
 * (0 … lanes − 1), so a lane can reuse its own buffers. After a failure no further item starts;
 * the items in progress are awaited and the first failure is thrown.
 */
export async function mapInLanes<I, R>(items: readonly I[], lanes: number, fn: (item: I, lane: number, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0,
    failed = false,
    first: unknown;
  const lane = async (l: number) => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]!, l, i);
      } catch (e) {
        if (!failed) first = e;
        failed = true;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(lanes, items.length)) }, (_, l) => lane(l)));
  if (failed) throw first;
  return out;
}
