// The layer rules of issue 16, checked in `npm test` (test/layers.test.ts runs depcruise with this file):
//   bin → commands → surgery → formats, linalg → common; no cycles; formats and linalg know nothing
//   of each other; nothing below commands imports commands; no command imports another
//   (commands/support is CLI plumbing every command shares; commands/index.ts registers them all).
//   Cycles are checked everywhere; the layer rules bind the product code, not its tests (a test of
//   formats/ may compute a ΔW with linalg/ to check what it read).
const TESTS = "\\.test\\.tsx?$";

/** A rule of the product code: no file under `from` (tests aside) may import one under `to`. */
function layer(name, comment, from, to, toNot) {
  return { name, severity: "error", comment, from: { path: from, pathNot: TESTS }, to: toNot ? { path: to, pathNot: toNot } : { path: to } };
}

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    { name: "no-circular", severity: "error", comment: "Files that import each other in a loop.", from: {}, to: { circular: true } },
    layer("formats-not-linalg", "formats/ turns bytes into the adapter model and back; it computes nothing.", "^formats/", "^linalg/"),
    layer("linalg-not-formats", "linalg/ works on arrays only; shared errors and dtype codecs are in common/.", "^linalg/", "^formats/"),
    layer(
      "common-is-the-ground",
      "common/ (errors, atomic outputs, dtype codecs) is used by every layer and uses none.",
      "^common/",
      "^(bin|commands|surgery|formats|linalg)/",
    ),
    layer("lower-layers-not-surgery", "surgery/ is the domain layer between the commands and formats/linalg.", "^(linalg|formats|common)/", "^surgery/"),
    layer(
      "nothing-below-commands-imports-commands",
      "surgery/, formats/, linalg/ and common/ never import a command. The one exception, commands/prune/base-model.ts, " +
        "is being moved to formats/model/ on another branch: drop it from this rule then.",
      "^(surgery|formats|linalg|common)/",
      "^commands/",
      "^commands/prune/base-model\\.ts$",
    ),
    layer(
      "no-command-imports-another",
      "Each command folder imports only itself, commands/support and the layers below.",
      "^commands/(?!support/)([^/]+)/",
      "^commands/",
      ["^commands/$1/", "^commands/support/"],
    ),
    {
      name: "nothing-imports-bin",
      severity: "error",
      comment: "bin/ is the process boundary: nothing imports it.",
      from: { pathNot: "^bin/" },
      to: { path: "^bin/" },
    },
    { name: "not-to-unresolvable", severity: "error", comment: "An import that resolves to nothing.", from: {}, to: { couldNotResolve: true } },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^(node_modules|dist|native)/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default", "types"],
      extensions: [".ts", ".tsx", ".js", ".mjs", ".cjs", ".json", ".d.ts"],
    },
  },
};
