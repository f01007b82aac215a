// Tucker cores as LyCORIS rebuilds them (lycoris/functional/general.py `rebuild_tucker`:
// einsum("i j ..., i p, j r -> p r ...", t, wa, wb)): W[p, r, k…] = Σ_{i,j} t[i,j,k…]·wa[i,p]·wb[j,r].
// Written as the product of two factors, W (flattened to [p, r·Πk]) = waᵀ · Q with
// Q[i, (r, k…)] = Σ_j t[i, j, k…]·wb[j, r]: rank ≤ rows of wa, exact.

/** Q [R1, n·K] from the core t [R1, R2, K] (K = Πkernel) and wb [R2, n], row-major. */
export function tuckerRight(t: Float64Array, R1: number, R2: number, K: number, wb: Float64Array, n: number): Float64Array {
  const Q = new Float64Array(R1 * n * K);
  for (let i = 0; i < R1; i++)
    for (let j = 0; j < R2; j++) {
      const tb = (i * R2 + j) * K;
      for (let r = 0; r < n; r++) {
        const w = wb[j * n + r]!;
        if (w === 0) continue;
        const qb = (i * n + r) * K;
        for (let k = 0; k < K; k++) Q[qb + k]! += t[tb + k]! * w;
      }
    }
  return Q;
}
