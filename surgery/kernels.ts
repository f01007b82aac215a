// The kernel dims a conv module carries beside its flattened factors, as the writers need them.

/** Kernel dims of a conv factor A ([r, in, kh, kw] → [kh, kw]). */
export function kernelOf(shape: number[]): number[] | undefined {
  return shape.length > 2 ? shape.slice(2) : undefined;
}
