// Work over a list with a fixed number of items in progress at once (lanes): used where each item
// is one native call on its own BLAS thread (extract's weights, k-means restarts).

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
