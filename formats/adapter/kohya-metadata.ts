// kohya sd-scripts / LyCORIS training metadata (docs/formats.md "kohya metadata"): the `ss_*`
// fields sd-scripts writes (network module, dim, alpha, base model, training comment, dataset
// statistics…), the ModelSpec `modelspec.*` fields, and the `sshs_*` content hashes. Read for
// `inspect`, and kept by every write with the fields that describe the tensors brought up to date:
// ss_network_dim / ss_network_alpha from the written modules, ss_network_module when LyCORIS
// modules were written as plain LoRA, and the hashes recomputed from the written bytes
// (formats/safetensors/content-hash.ts).
import type { HashFields } from "../safetensors/index.js";
import type { AdapterOutput, OutModule } from "./output.js";

/** Metadata key prefixes that belong to the kohya family. */
const PREFIXES = ["ss_", "sshs_", "modelspec."];

export const isKohyaMetadataKey = (k: string): boolean => PREFIXES.some((p) => k.startsWith(p));

/** The fields `inspect` names; every other kohya field is kept as its string in `fields`. */
const KNOWN: Record<string, keyof Omit<KohyaMetadata, "fields">> = {
  ss_base_model_version: "base_model_version",
  "modelspec.architecture": "architecture",
  ss_network_module: "network_module",
  ss_network_dim: "network_dim",
  ss_network_alpha: "network_alpha",
  ss_network_args: "network_args",
  ss_training_comment: "training_comment",
  "modelspec.title": "title",
  "modelspec.description": "description",
  sshs_model_hash: "model_hash",
  sshs_legacy_hash: "legacy_hash",
};

/** kohya metadata as `inspect --json` shows it (docs/schemas/inspect.schema.json `kohya_metadata`). */
export interface KohyaMetadata {
  base_model_version?: string;
  architecture?: string;
  network_module?: string;
  /** A number, or the string as stored ("Dynamic" when the ranks vary). */
  network_dim?: number | string;
  network_alpha?: number | string;
  /** The JSON object of ss_network_args, or its string when it is not one. */
  network_args?: Record<string, unknown> | string;
  training_comment?: string;
  title?: string;
  description?: string;
  model_hash?: string;
  legacy_hash?: string;
  /** Every other ss_*, sshs_* and modelspec.* field, whole, as stored. */
  fields: Record<string, string>;
}

function numberOrString(v: string): number | string {
  const n = Number(v);
  return v.trim() !== "" && Number.isFinite(n) ? n : v;
}

/** The kohya fields of a file's metadata, or null when it has none. */
export function parseKohyaMetadata(meta: Record<string, string>): KohyaMetadata | null {
  const keys = Object.keys(meta).filter(isKohyaMetadataKey).sort();
  if (keys.length === 0) return null;
  const k: KohyaMetadata = { fields: {} };
  for (const key of keys) {
    const v = meta[key]!;
    const name = KNOWN[key];
    if (!name) k.fields[key] = v;
    else if (name === "network_dim" || name === "network_alpha") k[name] = numberOrString(v);
    else if (name === "network_args") {
      const args = jsonObject(v);
      k.network_args = args ?? v;
    } else k[name] = v;
  }
  return k;
}

function jsonObject(v: string): Record<string, unknown> | null {
  try {
    const o = JSON.parse(v) as unknown;
    return o && typeof o === "object" && !Array.isArray(o) ? (o as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** Fields longer than this are summarised in the table (whole in --json). */
export const LONG_FIELD_CHARS = 120;

/** One line of a long field for the table: a JSON object's size (ss_tag_frequency: datasets and tags), else its length. */
export function summariseField(key: string, v: string): string {
  if (v.length <= LONG_FIELD_CHARS) return v;
  const o = jsonObject(v);
  if (o && key === "ss_tag_frequency") {
    const tags = Object.values(o).reduce<number>((n, d) => n + (d && typeof d === "object" ? Object.keys(d).length : 0), 0);
    return `${Object.keys(o).length} dataset(s), ${tags} tags (${v.length.toLocaleString("en-US")} chars)`;
  }
  if (o) return `JSON object of ${Object.keys(o).length} keys (${v.length.toLocaleString("en-US")} chars)`;
  if (v.startsWith("data:")) return `${v.slice(0, v.indexOf(",") > 0 ? v.indexOf(",") : 24)} (${v.length.toLocaleString("en-US")} chars)`;
  return `${v.slice(0, LONG_FIELD_CHARS - 1)}… (${v.length.toLocaleString("en-US")} chars)`;
}

// ---------------------------------------------------------------------------------------------
// Keeping the metadata up to date on write

/** Python's str(float) for an alpha, as sd-scripts stores it ("4.0", "0.5"). */
export function formatAlpha(a: number): string {
  return Number.isInteger(a) ? a.toFixed(1) : String(a);
}

/** kohya's alpha of a written module: scale·rank whatever the output format's own alpha means. */
function kohyaAlpha(m: OutModule, rslora: boolean): number {
  return rslora ? m.alpha * Math.sqrt(m.rank) : m.alpha;
}

/** The one value all modules share, else "Dynamic" (what sd-scripts' resize_lora.py writes when ranks vary). */
function uniform(values: number[], show: (x: number) => string): string {
  const set = new Set(values);
  return set.size === 1 ? show(values[0]!) : "Dynamic";
}

/** LyCORIS algorithms whose modules are not lora_down·lora_up: written as plain LoRA, the file is a networks.lora file. */
const LYCORIS_PLAIN = new Set(["lora", "locon"]);

/** A 3×3 (or larger) conv module: kohya sizes these by conv_dim / conv_alpha in ss_network_args. */
const isKernelConv = (m: OutModule): boolean => m.kind === "conv" && (m.kernel ?? []).reduce((p, x) => p * x, 1) > 1;

export interface KohyaMetadataPlan {
  metadata: Record<string, string>;
  /** The hash fields the writer fills from the written bytes (empty: none). */
  hashFields: HashFields;
}

/**
 * The output metadata with its kohya fields made true for `out`'s modules (docs/formats.md
 * "kohya metadata"). kohya output always gets ss_network_dim/alpha/module and the sshs_* hashes
 * (sd-scripts writes them in every file); other formats update those they carry.
 */
export function updateKohyaMetadata(metadata: Record<string, string>, out: AdapterOutput): KohyaMetadataPlan {
  const meta = { ...metadata };
  const kohya = out.format === "kohya";
  const rslora = !kohya && out.baseConfig?.["use_rslora"] === true;
  // sd-scripts sizes 3×3 conv modules by conv_dim/conv_alpha (ss_network_args), the rest by network_dim/alpha.
  const linear = out.modules.filter((m) => !isKernelConv(m));
  const mods = linear.length ? linear : out.modules;
  const has = (k: string) => meta[k] !== undefined;
  if (mods.length && (kohya || has("ss_network_dim")))
    meta["ss_network_dim"] = uniform(
      mods.map((m) => m.rank),
      String,
    );
  if (mods.length && (kohya || has("ss_network_alpha")))
    meta["ss_network_alpha"] = uniform(
      mods.map((m) => kohyaAlpha(m, rslora)),
      formatAlpha,
    );
  const args = meta["ss_network_args"] !== undefined ? jsonObject(meta["ss_network_args"]) : null;
  let argsChanged = false;
  const algo = typeof args?.["algo"] === "string" ? (args["algo"] as string) : undefined;
  if (meta["ss_network_module"] === "lycoris.kohya" && algo !== undefined && !LYCORIS_PLAIN.has(algo)) {
    // Written as plain lora_down·lora_up: LyCORIS' algo would now describe modules the file lacks.
    meta["ss_network_module"] = "networks.lora";
    delete args!["algo"];
    argsChanged = true;
    meta["ss_training_comment"] = `written as plain LoRA by lora from lycoris.kohya (algo ${algo}); ${meta["ss_training_comment"] ?? ""}`;
  } else if (kohya) meta["ss_network_module"] ??= "networks.lora";
  const convs = out.modules.filter(isKernelConv);
  if (args && convs.length) {
    const set = (k: string, v: string) => {
      if (k in args && args[k] !== v) [args[k], argsChanged] = [v, true];
    };
    set(
      "conv_dim",
      uniform(
        convs.map((m) => m.rank),
        String,
      ),
    );
    set(
      "conv_alpha",
      uniform(
        convs.map((m) => kohyaAlpha(m, rslora)),
        formatAlpha,
      ),
    );
  }
  // rewritten only when a value changed (sd-scripts' json.dumps spacing is kept otherwise)
  if (args && argsChanged) meta["ss_network_args"] = JSON.stringify(args);
  const hashFields: HashFields = {};
  if (kohya || has("sshs_model_hash")) hashFields["sshs_model_hash"] = (h) => h.model;
  if (kohya || has("sshs_legacy_hash")) hashFields["sshs_legacy_hash"] = (h) => h.legacy;
  if (has("modelspec.hash_sha256")) hashFields["modelspec.hash_sha256"] = (h) => `0x${h.model}`;
  return { metadata: meta, hashFields };
}
