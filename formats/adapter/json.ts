// JSON with keys sorted at every level (PEFT writes adapter_config.json with sort_keys=True), so
// outputs are byte-identical whatever the order the config was assembled in.
export function sortedJson(v: unknown, indent?: number): string {
  const norm = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(norm);
    if (x && typeof x === "object")
      return Object.fromEntries(
        Object.keys(x as object)
          .sort()
          .map((k) => [k, norm((x as Record<string, unknown>)[k])]),
      );
    return x;
  };
  return JSON.stringify(norm(v), null, indent);
}
