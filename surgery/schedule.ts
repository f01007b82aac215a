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
