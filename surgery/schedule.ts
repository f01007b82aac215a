// Scheduling for commands that stream modules in a fixed order: start the next modules' work while
// the current one is written (ReadAhead), and cap how many native calls run at once (Lanes).

/**
 * Work started ahead of its use, in a known order: take(k) returns k's promise and makes sure the
 * `window` items after k have started. Taken out of order, an item starts only itself and the ones
 * after it, never those before (so at most window + 1 items are started and not yet taken, whatever
 * the order of takes). A rejection of work started ahead surfaces when its item is taken, not before.
 */
export class ReadAhead<K, V> {
  private readonly index = new Map<K, number>();
  private readonly started = new Map<K, Promise<V>>();
  private readonly taken = new Set<number>();

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
    const p = this.started.get(k) ?? this.start(k);
    this.started.delete(k);
    this.taken.add(i);
    for (let j = i + 1; j <= i + this.window && j < this.order.length; j++) this.launch(j);
    return p;
  }

  /** Resolves once all work started ahead and not taken has settled (before lanes end after a failure). */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.started.values()]);
  }

  private launch(j: number): void {
    const k = this.order[j]!;
    if (this.taken.has(j) || this.started.has(k)) return;
    const p = this.start(k);
    p.catch(() => {}); // surfaces through take(k)
    this.started.set(k, p);
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
