// Binary search in an ascending array, with numpy's semantics (used by k-means++ sampling and by
// kohya's dynamic-rank rules, which both follow numpy/torch code).

/** numpy/torch searchsorted(side="left"): the first index i with a[i] ≥ v (a ascending), else a.length. */
export function searchsortedLeft(a: ArrayLike<number>, v: number): number {
  let lo = 0,
    hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
