// A small JSON Schema (2020-12) validator for the schemas in docs/schemas: type, const, enum,
// properties / required / additionalProperties, items, minItems / maxItems, minimum / maximum /
// exclusiveMinimum, oneOf, and $ref to another file of the folder. Enough for our own schemas;
// any other keyword is refused, so a schema cannot silently check less than it says.
import { readFileSync } from "node:fs";
import { join } from "node:path";

type Schema = Record<string, unknown>;
const KNOWN = new Set([
  "$schema",
  "$id",
  "title",
  "description",
  "type",
  "const",
  "enum",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "minItems",
  "maxItems",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "oneOf",
  "$ref",
]);

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

export function validate(value: unknown, schema: Schema, dir: string, path = "$"): string[] {
  for (const k of Object.keys(schema)) if (!KNOWN.has(k)) throw new Error(`${path}: schema keyword ${k} is not supported by test/json-schema.ts`);
  if (typeof schema["$ref"] === "string") return validate(value, JSON.parse(readFileSync(join(dir, schema["$ref"]), "utf8")) as Schema, dir, path);
  const errs: string[] = [];
  const t = typeOf(value);
  if (schema["type"] !== undefined) {
    const want = ([] as string[]).concat(schema["type"] as string | string[]);
    if (!want.some((w) => w === t || (w === "number" && t === "integer"))) return [`${path}: ${t}, expected ${want.join("|")}`];
  }
  if ("const" in schema && value !== schema["const"]) errs.push(`${path}: ${JSON.stringify(value)} ≠ ${JSON.stringify(schema["const"])}`);
  if (schema["enum"] && !(schema["enum"] as unknown[]).includes(value)) errs.push(`${path}: ${JSON.stringify(value)} not in ${JSON.stringify(schema["enum"])}`);
  if (typeof value === "number") {
    if (typeof schema["minimum"] === "number" && value < schema["minimum"]) errs.push(`${path}: ${value} < ${schema["minimum"]}`);
    if (typeof schema["maximum"] === "number" && value > schema["maximum"]) errs.push(`${path}: ${value} > ${schema["maximum"]}`);
    if (typeof schema["exclusiveMinimum"] === "number" && value <= schema["exclusiveMinimum"]) errs.push(`${path}: ${value} ≤ ${schema["exclusiveMinimum"]}`);
  }
  if (schema["oneOf"]) {
    const ok = (schema["oneOf"] as Schema[]).filter((s) => validate(value, s, dir, path).length === 0).length;
    if (ok !== 1) errs.push(`${path}: matches ${ok} of oneOf`);
  }
  if (t === "array") {
    const a = value as unknown[];
    if (typeof schema["minItems"] === "number" && a.length < schema["minItems"]) errs.push(`${path}: ${a.length} items < ${schema["minItems"]}`);
    if (typeof schema["maxItems"] === "number" && a.length > schema["maxItems"]) errs.push(`${path}: ${a.length} items > ${schema["maxItems"]}`);
    if (schema["items"]) a.forEach((x, i) => errs.push(...validate(x, schema["items"] as Schema, dir, `${path}[${i}]`)));
  }
  if (t === "object") {
    const o = value as Record<string, unknown>;
    const props = (schema["properties"] ?? {}) as Record<string, Schema>;
    for (const r of (schema["required"] ?? []) as string[]) if (!(r in o)) errs.push(`${path}: missing ${r}`);
    for (const [k, v] of Object.entries(o)) {
      if (props[k]) errs.push(...validate(v, props[k]!, dir, `${path}.${k}`));
      else if (schema["additionalProperties"] === false) errs.push(`${path}: unexpected property ${k}`);
      else if (typeof schema["additionalProperties"] === "object") errs.push(...validate(v, schema["additionalProperties"] as Schema, dir, `${path}.${k}`));
    }
  }
  return errs;
}
