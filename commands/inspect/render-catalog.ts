// inspect's catalog rows: one per adapter (table on a terminal, TSV when piped).
import { fmt, formatTable, formatTsv } from "../support/output.js";
import type { AdapterSummary } from "../../surgery/catalog.js";

const cells = (a: AdapterSummary, human: boolean): string[] => [
  a.path,
  a.format,
  a.dtype,
  String(a.modules),
  String(a.total_rank),
  human ? a.parameters.toLocaleString("en-US") : String(a.parameters),
  human ? a.bytes.toLocaleString("en-US") : String(a.bytes),
  human ? fmt(a.effective_rank) : String(a.effective_rank),
  human ? fmt(100 * a.energy_at_half_rank, 4) + "%" : String(a.energy_at_half_rank),
];

export function renderCatalogTable(rows: AdapterSummary[]): string {
  return formatTable(
    ["adapter", "format", "dtype", "modules", "total rank", "parameters", "bytes", "eff. rank", "energy @ r/2"],
    rows.map((a) => cells(a, true)),
  );
}

/** Column names of the piped rows (printed with --header). */
export const CATALOG_TSV_COLUMNS = ["adapter", "format", "dtype", "modules", "total_rank", "parameters", "bytes", "effective_rank", "energy_at_half_rank"];

export function renderCatalogTsv(rows: AdapterSummary[], header = false): string {
  return formatTsv(
    rows.map((a) => cells(a, false)),
    header ? CATALOG_TSV_COLUMNS : undefined,
  );
}
